"""The dashboard's read model: one `PipelineStatus` answers `/api/status`, `/metrics`, the page and `pipeline status`.

Times are unix seconds (float); durations carry `_s`. `None` means "not known" (a source that is down, a Redis
that reports no lag), never zero.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ServiceState = Literal["running", "degraded", "standby", "dead", "stopped", "starting", "stopping", "absent"]


class Reachability(BaseModel):
    ok: bool
    error: str = ""


class RedisStatus(Reachability):
    server: str = Field("", description="the server's name and version, e.g. `Redis 7.0.15`")
    durability: str = Field(
        "", description="what an acknowledged write survives: `AOF, appendfsync always`, `AOF on`, `AOF off`, "
        "`unknown (managed)` (common/redis_probe.py)"
    )  # fmt: skip
    durability_source: str = Field("", description="`CONFIG GET`, `INFO persistence`, or empty when neither answered")
    durability_warning: str = Field("", description="set when weaker than docs/operations.md recommends")


class ConsumerStatus(BaseModel):
    name: str
    pending: int
    idle_s: float


class GroupStatus(BaseModel):
    name: str
    exists: bool = Field(description="False while the group has not been created yet")
    lag: int | None = Field(None, description="entries not yet delivered to the group (XINFO GROUPS lag)")
    pending: int = Field(0, description="entries delivered but not acknowledged")
    last_delivered_id: str = ""
    consumers: list[ConsumerStatus] = []


class StreamStatus(BaseModel):
    name: str
    length: int = Field(description="entries in the stream now (XLEN); an entry is a page of 1..N items")
    entries_added: int | None = Field(
        None, description="entries appended since the stream was created (XINFO STREAM; None on Redis 6.2)"
    )
    items_added: int | None = Field(
        None, description="items those entries held (fills, trades, markets, events), from the `stream:items` hash; "
        "None where it has no field for the stream (appended before pages: one item an entry)",
    )  # fmt: skip
    groups: list[GroupStatus] = []


class CursorStatus(BaseModel):
    key: str
    value: str
    age_s: float | None = Field(None, description="seconds since the dashboard saw this cursor move")
    behind_s: float | None = Field(None, description="now minus the cursor's timestamp (Goldsky)")
    behind_blocks: int | None = Field(None, description="safe head minus the chain cursor's block, when known")
    finality_lag_blocks: int | None = Field(
        None, description="chain head minus the safe head (finalized): Polygon's finality can stall for minutes"
    )


class ServiceStatus(BaseModel):
    name: str
    state: ServiceState
    reported_state: str = ""
    heartbeat_at: float | None = None
    heartbeat_age_s: float | None = None
    started_at: float | None = None
    pid: int | None = None
    last_error: str = ""
    last_error_at: float | None = None
    counters: dict[str, int] = {}
    gauges: dict[str, float] = Field({}, description="values the service sets (head blocks, unacknowledged upgrades)")
    rates: dict[str, float] = Field({}, description="per-second rate of each counter over the last sample")


class TableStatus(BaseModel):
    name: str
    rows: int


class TradeView(BaseModel):
    id: str
    timestamp: float
    market_id: str
    question: str = Field(description="untrusted market text: render as text, never as HTML")
    outcome: str
    side: str = Field(description="the taker order's side (the row whose taker is the exchange)")
    price: float
    usd_amount: str


class ClickHouseStatus(BaseModel):
    ok: bool
    error: str = ""
    checked_at: float | None = Field(None, description="when these numbers were read; older than now when stale")
    stale: bool = False
    tables: list[TableStatus] = []
    newest_trade_at: float | None = None
    trades_without_market: int | None = None
    trades_without_market_by_module: dict[str, int] = {}
    latest_trades: list[TradeView] = []


class DeadLetterView(BaseModel):
    id: str
    stream: str
    group: str
    entry_id: str | None
    error: str
    deliveries: int
    time: float | None


class DlqStatus(BaseModel):
    length: int
    latest: list[DeadLetterView] = []


class UnresolvedStatus(BaseModel):
    emitted_without_market: int = Field(0, description="trade processor's count since it started")
    excluded_by_versions: int = Field(
        0, description="trades the processor wrote at once without a market because GAMMA_VERSIONS leaves their "
        "market's version out (since it started)",
    )  # fmt: skip
    lookups_pending: int = Field(0, description="tokens waiting in markets:token_lookups")
    trades_without_market: int | None = Field(None, description="rows of trades with market_id = ''")
    by_module: dict[str, int] = Field(
        {},
        description="those rows by the kind of their token: `ctf_token` (v1, CLOB v2) or the Protocol V2 module of "
        "a position id (`binary`, `neg_risk`, `combinatorial`: Combos, which no Gamma market owns)",
    )


class PipelineStatus(BaseModel):
    generated_at: float
    redis: RedisStatus
    clickhouse: ClickHouseStatus
    streams: list[StreamStatus] = []
    services: list[ServiceStatus] = []
    cursors: list[CursorStatus] = []
    dlq: DlqStatus = DlqStatus(length=0)
    unresolved: UnresolvedStatus = UnresolvedStatus()


class History(BaseModel):
    """The last 15 minutes, column-oriented for the charts: `t[i]` is the time of every series' value `i`."""

    t: list[float] = []
    throughput: dict[str, list[float | None]] = Field({}, description="per-second rates: fills, trades, rows")
    backlog: dict[str, list[int | None]] = Field({}, description="lag + pending per `stream/group`")
