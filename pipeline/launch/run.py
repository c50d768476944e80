"""`python -m pipeline run` (and `demo`): the whole pipeline under supervisord, in one command.

On a machine with only Python 3.11+, the first run creates `.venv` and installs requirements.txt into it (the
Makefile's stamp, `.venv/.requirements-installed`, says when that is done), then re-runs itself with the venv's
interpreter. From there `pipeline.launch.launcher` decides embedded or configured Redis/ClickHouse, starts supervisord
(supervisord.conf), waits for the servers and the migrations, prints the dashboard URL and follows the logs until
Ctrl-C, which stops everything. This module imports only the standard library: it must run before the venv exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
STAMP = VENV / ".requirements-installed"  # the Makefile's stamp too
REQUIREMENTS = ROOT / "requirements.txt"
MIN_PYTHON = (3, 11)

DESCRIPTIONS = {
    "run": "Start Redis and ClickHouse (embedded unless configured and reachable), every service under "
    "supervisord and the dashboard, against Polymarket's public APIs; follow the logs; Ctrl-C stops all.",
    "demo": "The same as `run`, with the simulator started and every source URL pointed at it: live fills flow, "
    "trades reach ClickHouse within seconds. Embedded servers keep the demo's data under data/demo/.",
}


def parse_args(command: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m pipeline {command}",
        description=DESCRIPTIONS[command],
        epilog="Settings come from the environment and .env; docs/operations.md explains each.",
    )
    parser.add_argument("--no-follow", action="store_true", help="do not print the programs' logs (still Ctrl-C)")
    parser.add_argument(
        "--detach", action="store_true", help="return once everything runs, leaving supervisord in the background"
    )
    parser.add_argument(
        "--no-bootstrap", action="store_true", help="use this interpreter as it is: no .venv, no pip install"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=120.0, metavar="S", help="seconds for the servers to be ready (120)"
    )
    if command == "demo":
        parser.add_argument("--rate", type=float, help="live fills per second from the simulator (SIMULATOR_RATE, 50)")
    return parser.parse_args(argv)


def requirements_stale(stamp: Path = STAMP, requirements: Path = REQUIREMENTS) -> bool:
    return not stamp.exists() or stamp.stat().st_mtime < requirements.stat().st_mtime


def in_venv(venv: Path = VENV) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def install_requirements(python: Path) -> None:
    print("pipeline: installing requirements.txt into .venv (the first time takes a few minutes)", flush=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", REQUIREMENTS], check=True)
    STAMP.touch()


def bootstrap(command: str, argv: list[str]) -> None:
    """Make sure .venv has the requirements; re-exec into it when this is another interpreter (never returns)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"pipeline: creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    if requirements_stale():
        install_requirements(python)
    if not in_venv():
        os.execv(python, [str(python), "-m", "pipeline", command, *argv])


def main_for(command: str, argv: list[str]) -> int:
    args = parse_args(command, argv)
    if sys.version_info < MIN_PYTHON:
        print(f"pipeline {command}: Python {'.'.join(map(str, MIN_PYTHON))}+ is needed", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    if not args.no_bootstrap:
        try:
            bootstrap(command, argv)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"pipeline {command}: could not prepare .venv: {exc}", file=sys.stderr)
            return 1
    from pipeline.launch.launcher import launch  # needs the requirements: imported only now

    return launch(command, args, root=ROOT, python=sys.executable)


def main(argv: list[str] | None = None) -> int:
    return main_for("run", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
