"""The live chain's state kept beside the demo's data, so a restarted simulator never serves a head behind the one
it served before.

Why a stored head rather than a head computed from the wall clock since a stored genesis: the head then moves only
when a block is produced, whatever the live rate and block interval (the bench shrinks the interval at high rates,
and `/_sim/config` changes the rate at run time), and a restart after a week away adds no week of empty blocks
for the chain ingester to scan. The file is replaced atomically before any request can see the blocks it covers
(the clock task writes it before it yields to the event loop), so even a SIGKILL leaves a head at or past the one
served. A simulator started without a state file (tests, the bench) starts from its history head, as before.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger("simulator.chain_state")


@dataclass(frozen=True)
class ChainState:
    head_block: int  # the newest block served
    head_timestamp: int  # its timestamp (unix seconds): later blocks never go below it


def load_chain_state(path: Path) -> ChainState | None:
    """The stored state, or None when there is none yet; an unreadable file is reported and ignored."""
    try:
        raw = orjson.loads(path.read_bytes())
        return ChainState(int(raw["head_block"]), int(raw["head_timestamp"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable chain state %s: %s", path, exc)
        return None


def save_chain_state(path: Path, state: ChainState) -> None:
    """Replace the file atomically (write a sibling, then rename): a crash leaves the old state or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(orjson.dumps({"head_block": state.head_block, "head_timestamp": state.head_timestamp}))
    os.replace(partial, path)
