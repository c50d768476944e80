"""`python -m pipeline demo`: `run` with the simulator as every source (see pipeline/launch/run.py)."""

from __future__ import annotations

import sys

from pipeline.launch.run import main_for


def main(argv: list[str] | None = None) -> int:
    return main_for("demo", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
