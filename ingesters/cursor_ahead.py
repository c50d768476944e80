"""A stored cursor past its source's head is an alarm, not a wait.

A cursor can only be past the head when the source changed under it: POLYGON_RPC_URL now points at a node that
is behind or at another chain, a subgraph was redeployed or lost data, or the cursor came from another world (a
restarted simulator once served a chain behind the demo's stored cursor). The ingester would wait in silence
until the source passes the cursor, which may be never. Load-balanced backends differ by a few blocks, so a
small lead is tolerated (`*_CURSOR_AHEAD_TOLERANCE_*`) and the alarm comes only after it has lasted
`*_CURSOR_AHEAD_GRACE_S`: the service is then `degraded`, its last error saying by how much, for how long, and
what fixes it. `python -m pipeline doctor` checks the same without the grace period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from common import keys
from common.errors import TransientSourceError

RESET_HINT = "if the source is right, stop the pipeline and run `python -m pipeline reset` to start over"


def chain_cursor_ahead(cursor: int, head: int, tolerance_blocks: int) -> str | None:
    """Why the chain cursor is too far past the node's head, or None."""
    lead = cursor - head
    if lead <= tolerance_blocks:
        return None
    return (
        f"the stored cursor {keys.STATE_CHAIN_LAST_BLOCK} {cursor:,} is {lead:,} blocks past the node's head "
        f"{head:,} (CHAIN_CURSOR_AHEAD_TOLERANCE_BLOCKS={tolerance_blocks}): POLYGON_RPC_URL serves a chain "
        f"behind the one ingested, or another chain; {RESET_HINT}"
    )


def goldsky_cursor_ahead(cursor_ts: int, newest_ts: int | None, tolerance_s: int) -> str | None:
    """Why the Goldsky cursor is too far past the subgraph's newest fill, or None."""
    if newest_ts is not None and cursor_ts - newest_ts <= tolerance_s:
        return None
    newest = "has no fills" if newest_ts is None else f"has its newest fill at {newest_ts:,}"
    lead = "" if newest_ts is None else f", {cursor_ts - newest_ts:,} s later"
    return (
        f"the stored cursor {keys.STATE_GOLDSKY_LAST_TIMESTAMP} {cursor_ts:,}{lead}: the subgraph at GOLDSKY_URL "
        f"{newest} (GOLDSKY_CURSOR_AHEAD_TOLERANCE_S={tolerance_s}): it was redeployed, lost data or is another "
        f"one; {RESET_HINT}"
    )


@dataclass
class AheadAlarm:
    """How long a cursor has been too far ahead; `check` raises once that lasted `grace_s`."""

    grace_s: float
    since: float | None = None  # monotonic time it was first seen too far ahead

    def check(self, why: str | None) -> None:
        """`why`: the reason the cursor is too far ahead now, or None when it is not (the alarm ends)."""
        if why is None:
            self.since = None
            return
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.since >= self.grace_s:
            raise TransientSourceError(f"{why} (for {now - self.since:,.0f} s)")
