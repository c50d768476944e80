"""Run the simulator: `python -m pipeline simulator [flags]`, `python -m simulator [flags]`, or in a thread.

GAMMA_API_URL=http://HOST:PORT/gamma
GOLDSKY_URL=http://HOST:PORT/goldsky/subgraphs/orderbook-subgraph/0.0.1/gn
POLYGON_RPC_URL=http://HOST:PORT/rpc
DATA_API_URL=http://HOST:PORT/data-api
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn

from simulator.app import SimulatedDrop, SimulatorApp
from simulator.config import SimConfig, parse_faults
from simulator.constants import DATA_API_PREFIX, GAMMA_PREFIX, GOLDSKY_PATH, RPC_PATH
from simulator.truth import truth_json_chunks, truth_summary
from simulator.world import World

log = logging.getLogger("simulator")


class _HideSimulatedDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDrop)


def urls(base_url: str) -> dict[str, str]:
    return {
        "GAMMA_API_URL": base_url + GAMMA_PREFIX,
        "GOLDSKY_URL": base_url + GOLDSKY_PATH,
        "POLYGON_RPC_URL": base_url + RPC_PATH,
        "DATA_API_URL": base_url + DATA_API_PREFIX,
    }


@dataclass
class SimulatorHandle:
    """A running simulator: URLs, the in-process world, and the control plane."""

    base_url: str
    app: SimulatorApp

    @property
    def world(self) -> World:
        return self.app.world

    @property
    def gamma_url(self) -> str:
        return self.base_url + GAMMA_PREFIX

    @property
    def goldsky_url(self) -> str:
        return self.base_url + GOLDSKY_PATH

    @property
    def rpc_url(self) -> str:
        return self.base_url + RPC_PATH

    @property
    def data_api_url(self) -> str:
        return self.base_url + DATA_API_PREFIX

    def env(self) -> dict[str, str]:
        return urls(self.base_url)

    def _control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.base_url + path, timeout=60.0, **kwargs)
        response.raise_for_status()
        return orjson.loads(response.content)

    def truth(
        self, fills: bool = True, offset: int = 0, limit: int | None = None, fields: tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        """GET /_sim/truth: the summary, plus fills [offset, offset+limit) with `fields` (default all)."""
        params: dict[str, Any] = {"fills": int(fills), "offset": offset}
        if limit is not None:
            params["limit"] = limit
        if fields:
            params["fields"] = ",".join(fields)
        return self._control("GET", "/_sim/truth", params=params)

    def config(self) -> dict[str, Any]:
        return self._control("GET", "/_sim/config")

    def set_faults(self, faults: str | dict[str, Any] | None = None, reset: bool = True) -> dict[str, Any]:
        """Replace (reset=True) or amend the faults: "429=0.1,rpc_error=0.2" or {"429": 0.1}."""
        return self._control("POST", "/_sim/config", json={"reset_faults": reset, "faults": faults or {}})

    def set_rate(self, rate: float) -> dict[str, Any]:
        return self._control("POST", "/_sim/config", json={"rate": rate})

    def set_switches(self, **switches: bool) -> dict[str, Any]:
        """Flip `keyset_off`, `finalized_tag_off`, `exchange_v3_logs_off` (other faults stay as they are)."""
        return self.set_faults({name: int(on) for name, on in switches.items()}, reset=False)

    def list_late_markets(self) -> dict[str, Any]:
        return self._control("POST", "/_sim/config", json={"list_late_markets": True})

    def plant(self, **changes: dict[str, Any]) -> dict[str, Any]:
        """`plant_upgrade={"block": N, "implementation": "0x…"}`, `plant_log={...}` or
        `data_api_discrepancy={"market_id": "…", "hour": T, "mode": "drop"}` (see `SimulatorApp.apply_changes`)."""
        return self._control("POST", "/_sim/config", json=changes)


def _uvicorn_config(app: SimulatorApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_HideSimulatedDrops())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        loop="asyncio",
        http="h11",
        timeout_graceful_shutdown=1,
    )


@contextlib.contextmanager
def serve_in_thread(
    config: SimConfig, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> Iterator[SimulatorHandle]:
    """Build the world, serve it with uvicorn in a daemon thread, stop it on exit."""
    app = SimulatorApp(World(config))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(_uvicorn_config(app, host, port, log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("simulator failed to start")
        time.sleep(0.01)
    try:
        yield SimulatorHandle(base_url=f"http://{host}:{sock.getsockname()[1]}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def build_parser() -> argparse.ArgumentParser:
    defaults = SimConfig()
    p = argparse.ArgumentParser(
        prog="python -m pipeline simulator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8545)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--markets", type=int, default=defaults.markets, help="markets listed on Gamma (incl. late)")
    p.add_argument("--history-fills", type=int, default=defaults.history_fills)
    p.add_argument("--v2-fills", type=int, default=None, help="history fills at/after the cutover (default 20%%)")
    p.add_argument("--rate", type=float, default=None, help="live fills/s (0 = history only)")
    p.add_argument("--live", action="store_true", help="live mode; --rate defaults to 20")
    p.add_argument(
        "--faults",
        default="",
        help="e.g. 429=0.1,500=0.05,timeout=0.02,truncate=0.05,drop=0.02,"
        "graphql_error=0.05,rpc_error=0.05,slow_ms=50,finalized_stall=1,retry_after_s=1,rpc.429=0.2",
    )
    p.add_argument("--fills-per-block", type=float, default=defaults.fills_per_block)
    p.add_argument("--burst-fills", type=int, default=defaults.burst_fills)
    p.add_argument("--bursts-per-part", type=int, default=defaults.bursts_per_part)
    p.add_argument("--late-markets", type=int, default=None)
    p.add_argument("--unlisted-markets", type=int, default=defaults.unlisted_markets)
    p.add_argument("--late-listing-delay-s", type=float, default=defaults.late_listing_delay_s)
    p.add_argument("--max-block-range", type=int, default=defaults.max_block_range)
    p.add_argument("--max-logs", type=int, default=defaults.max_logs)
    p.add_argument("--finalized-lag-blocks", type=int, default=defaults.finalized_lag_blocks)
    p.add_argument("--live-block-interval-s", type=float, default=defaults.live_block_interval_s)
    p.add_argument("--v2-market-share", type=float, default=defaults.v2_market_share, help="V2 events (today ~0.3)")
    p.add_argument("--v2-clob-ids-share", type=float, default=defaults.v2_clob_ids_share)
    p.add_argument("--unversioned-share", type=float, default=defaults.unversioned_share)
    p.add_argument("--combo-share", type=float, default=defaults.combo_share, help="Combo groups (today ~0.05)")
    p.add_argument("--gamma-offset-cap", type=int, default=defaults.gamma_offset_cap, help="0 = no cap")
    p.add_argument("--gamma-offset-versions", choices=("honour", "ignore", "v1_only"),
                   default=defaults.gamma_offset_versions, help="how offset listings treat `version`")  # fmt: skip
    p.add_argument("--gamma-shape-share", type=float, default=defaults.gamma_shape_share)
    p.add_argument(
        "--chain-state-file", metavar="PATH", help="keep the live head here: a restart continues the chain from it"
    )
    p.add_argument("--export-truth", metavar="PATH", help="write the history's ground truth as JSON and exit")
    p.add_argument("--log-level", default="info")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    rate = args.rate if args.rate is not None else (20.0 if args.live else 0.0)
    return SimConfig(
        seed=args.seed,
        markets=args.markets,
        history_fills=args.history_fills,
        v2_fills=args.v2_fills,
        rate=rate,
        fills_per_block=args.fills_per_block,
        burst_fills=args.burst_fills,
        bursts_per_part=args.bursts_per_part,
        late_markets=args.late_markets,
        unlisted_markets=args.unlisted_markets,
        late_listing_delay_s=args.late_listing_delay_s,
        max_block_range=args.max_block_range,
        max_logs=args.max_logs,
        finalized_lag_blocks=args.finalized_lag_blocks,
        live_block_interval_s=args.live_block_interval_s,
        v2_market_share=args.v2_market_share,
        v2_clob_ids_share=args.v2_clob_ids_share,
        unversioned_share=args.unversioned_share,
        combo_share=args.combo_share,
        gamma_offset_cap=args.gamma_offset_cap or None,
        gamma_offset_versions=args.gamma_offset_versions,
        gamma_shape_share=args.gamma_shape_share,
        chain_state_file=args.chain_state_file,
        faults=parse_faults(args.faults),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    world = World(config)
    if args.export_truth:
        world.start()
        with open(args.export_truth, "wb") as out:
            for chunk in truth_json_chunks(world, truth_summary(world)):
                out.write(chunk)
        print(f"wrote truth for {world.count} fills to {args.export_truth}")
        return 0
    app = SimulatorApp(world)
    base_url = f"http://{args.host}:{args.port}"
    log.info(
        "world ready in %.2f s: %d fills, blocks %d..%d, %d markets",
        time.monotonic() - started,
        world.count,
        world.first_block,
        world.head_block,
        len(world.catalogue.markets),
    )
    for name, url in urls(base_url).items():
        print(f"{name}={url}", flush=True)
    uvicorn.Server(_uvicorn_config(app, args.host, args.port, args.log_level.lower())).run()
    return 0
