"""The project's exceptions, grouped by what the caller does about them.

    PipelineError
    ├── SourceError                 an upstream API (Gamma, Goldsky, Polygon RPC) failed
    │   ├── TransientSourceError    timeout, connection error, 5xx, 429: back off and retry
    │   └── PermanentSourceError    4xx, a reply that can never become valid: stop and alert
    ├── SinkError                   Redis or ClickHouse failed; `sink` says which ("redis" or "clickhouse")
    │   ├── TransientSinkError      unreachable, timeout, out of memory, read-only replica: don't ack, retry later
    │   ├── RejectedRowsError       ClickHouse refused the data itself: dead-letter the rows
    │   └── SinkCommandError        the sink refused the command (wrong key type, script error): a bug, not retried
    ├── PoisonMessage               an entry that cannot be decoded or validated: dead-letter it now
    ├── CursorMoved                 a source cursor changed under us: re-read it and go on from there
    └── ConfigError                 a setting is missing or invalid: the service stops at start

Dependencies' exceptions (httpx, redis, clickhouse-connect) are translated into these once, at the boundary:
`common.http.map_http_errors()`, `common.redis_client.map_redis_errors()` and
`common.clickhouse.map_clickhouse_errors()`; services, the dashboard and the ops commands never catch them.
"""

from __future__ import annotations

from typing import Literal

Sink = Literal["redis", "clickhouse"]


class PipelineError(Exception):
    """Base of every error raised on purpose by the pipeline."""


class SourceError(PipelineError):
    """An upstream API call failed; `status` is the HTTP status when there was a response."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientSourceError(SourceError):
    """Worth retrying after a pause; `retry_after_s` is the server's own hint when it gave one."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class PermanentSourceError(SourceError):
    """Retrying the same request cannot succeed."""


class SinkError(PipelineError):
    """Reading from or writing to Redis or ClickHouse failed; `sink` names which one (e.g. to reconnect to it)."""

    def __init__(self, message: str, *, sink: Sink) -> None:
        super().__init__(message)
        self.sink: Sink = sink


class TransientSinkError(SinkError):
    """The sink is unreachable or overloaded; the data stays pending and is retried."""


class RejectedRowsError(SinkError):
    """The sink refused the data as invalid; retrying the same rows cannot succeed."""


class SinkCommandError(SinkError):
    """The sink refused the command itself (a key of the wrong type, a failing script): a bug in the caller."""


class PoisonMessage(PipelineError):
    """An entry that cannot be decoded or validated; it goes to the dead-letter stream with this reason."""


class CursorMoved(PipelineError):
    """The cursor no longer holds the value this writer expected; nothing was written."""


class ConfigError(PipelineError):
    """A setting is missing or invalid; the message names the environment variable."""
