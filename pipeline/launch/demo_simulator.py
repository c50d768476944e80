"""The simulator as `python -m pipeline demo` runs it under supervisord (program `simulator`).

Its flags come from SIMULATOR_* variables, so supervisord.conf names no port or rate: SIMULATOR_HOST (127.0.0.1),
SIMULATOR_PORT (8545), SIMULATOR_RATE (live fills/s, 50), SIMULATOR_HISTORY_FILLS (5000), SIMULATOR_MARKETS (60),
SIMULATOR_SEED (1), SIMULATOR_FINALIZED_LAG_BLOCKS (2: live fills reach the chain ingester within seconds, where
the real chain's `finalized` lags about a minute), SIMULATOR_CHAIN_STATE_FILE (data/demo/simulator/chain.json: the
live head kept with the demo's data, so a restarted demo continues its chain instead of serving a head behind the
chain ingester's cursor; "" keeps none). Any extra argument goes to `python -m pipeline simulator`.
"""

from __future__ import annotations

import sys

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import PipelineSettings, load
from common.errors import ConfigError
from simulator import server


class DemoSimulatorSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="SIMULATOR_")

    host: str = "127.0.0.1"
    port: int = Field(8545, ge=1, le=65535)
    rate: float = Field(50.0, ge=0)
    history_fills: int = Field(5000, ge=0)
    markets: int = Field(60, ge=1)
    seed: int = 1
    finalized_lag_blocks: int = Field(2, ge=0)
    chain_state_file: str = "data/demo/simulator/chain.json"  # the demo chain's head, kept across restarts


def simulator_argv(settings: DemoSimulatorSettings) -> list[str]:
    return [
        f"--host={settings.host}",
        f"--port={settings.port}",
        f"--rate={settings.rate}",
        f"--history-fills={settings.history_fills}",
        f"--markets={settings.markets}",
        f"--seed={settings.seed}",
        f"--finalized-lag-blocks={settings.finalized_lag_blocks}",
    ] + ([f"--chain-state-file={settings.chain_state_file}"] if settings.chain_state_file else [])


def main(argv: list[str] | None = None) -> int:
    extra = sys.argv[1:] if argv is None else argv
    if "-h" in extra or "--help" in extra:
        print(__doc__)
        return 0
    try:
        settings = load(DemoSimulatorSettings)
    except ConfigError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    return server.main(simulator_argv(settings) + extra)


if __name__ == "__main__":
    raise SystemExit(main())
