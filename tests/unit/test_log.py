"""Logs: one event per line with the service name, to stdout and logs/<service>.log; JSON lines when asked."""

from __future__ import annotations

import orjson
import structlog

from common.config import LogSettings
from common.log import configure_logging


def test_json_lines_go_to_stdout_and_the_service_log_file(tmp_path, capsys) -> None:
    configure_logging("demo_service", LogSettings(dir=str(tmp_path), format="json"))
    structlog.get_logger().info("batch", rows=3)
    structlog.get_logger().warning("retrying request", attempt=2)

    printed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = [orjson.loads(line) for line in (tmp_path / "demo_service.log").read_text().splitlines()]
    assert printed == written
    assert [(e["event"], e["service"], e["level"]) for e in written] == [
        ("batch", "demo_service", "info"),
        ("retrying request", "demo_service", "warning"),
    ]
    assert written[0]["rows"] == 3 and written[0]["timestamp"].endswith("Z")


def test_console_format_is_one_readable_line_per_event(tmp_path, capsys) -> None:
    configure_logging("demo_service", LogSettings(dir=str(tmp_path), format="console", level="warning"))
    structlog.get_logger().info("hidden below the level")
    structlog.get_logger().warning("sink unavailable; batch kept", entries=5)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert "sink unavailable; batch kept" in lines[0] and "entries=5" in lines[0] and "service=demo_service" in lines[0]
