"""structlog set-up: one event per line, with the service name, to stdout and `logs/<service>.log`.

Console format is for people at a terminal; `LOG_FORMAT=json` gives one JSON object per line for machines.
Logs go straight through structlog (not stdlib logging), which is the fast path its docs recommend.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO, Any, TextIO, cast

import orjson
import structlog

from common.config import LogSettings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _Tee:
    """A file-like object writing every line to stdout or stderr (looked up at each write) and to the log file."""

    def __init__(self, log_file: IO[str] | None, stream: str = "stdout") -> None:
        self._log_file = log_file
        self._stream = stream

    def write(self, text: str) -> None:
        getattr(sys, self._stream).write(text)
        if self._log_file is not None:
            self._log_file.write(text)

    def flush(self) -> None:
        getattr(sys, self._stream).flush()
        if self._log_file is not None:
            self._log_file.flush()


def _json_renderer(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    return orjson.dumps(event, default=str).decode()


def configure_logging(
    service: str, settings: LogSettings | None = None, *, to_file: bool = True, to_stderr: bool = False
) -> None:
    """Structured logs, one event per line, to stdout (stderr with `to_stderr`: a command whose stdout is its
    output, such as `pipeline status --json`) and to `<LOG_DIR>/<service>.log` with `to_file`."""
    settings = settings or LogSettings()
    log_file = None
    if to_file:
        log_dir = Path(settings.dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(log_dir / f"{service}.log", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    renderer: structlog.typing.Processor = (
        _json_renderer
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=(sys.stderr if to_stderr else sys.stdout).isatty(), pad_event_to=0)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[settings.level]),
        # _Tee has the write and flush PrintLogger uses, not all of TextIO
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Tee(log_file, "stderr" if to_stderr else "stdout"))),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
