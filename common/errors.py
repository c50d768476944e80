"""The project's exceptions, grouped by what the caller does about them.

    PipelineError
    ├── SourceError                 an upstream API (Gamma, Goldsky, Polygon RPC) failed
    │   ├── TransientSourceError    timeout, connection error, 5xx, 429: back off and retry
    │   └── PermanentSourceError    4xx, a reply that can never become valid: stop and alert
    ├── SinkError                   Redis or ClickHouse failed
    │   ├── TransientSinkError      unreachable, timeout, overloaded: don't ack, retry later
    │   └── RejectedRowsError       ClickHouse refused the data itself: dead-letter the rows
    ├── PoisonMessage               an entry that cannot be decoded or validated: dead-letter it now
    ├── CursorMoved                 a source cursor changed under us: re-read it and go on from there
    └── ConfigError                 a setting is missing or invalid: the service stops at start

Dependencies' exceptions (httpx, redis, clickhouse-connect) are translated into these at the boundary,
in `common.http`, `common.streams` and `common.clickhouse`, so service code never catches them.
"""

from __future__ import annotations


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
    """Writing to Redis or ClickHouse failed."""


class TransientSinkError(SinkError):
    """The sink is unreachable or overloaded; the data stays pending and is retried."""


class RejectedRowsError(SinkError):
    """The sink refused the data as invalid; retrying the same rows cannot succeed."""


class PoisonMessage(PipelineError):
    """An entry that cannot be decoded or validated; it goes to the dead-letter stream with this reason."""


class CursorMoved(PipelineError):
    """The cursor no longer holds the value this writer expected; nothing was written."""


class ConfigError(PipelineError):
    """A setting is missing or invalid; the message names the environment variable."""
