"""Live mode: new blocks of fills at the configured rate, and markets that change (prices, volume, closed).

Runs as one asyncio task in the server's loop, so it never races request handlers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path

from simulator.catalogue import LISTED
from simulator.chain_state import save_chain_state
from simulator.world import World

log = logging.getLogger("simulator.live")
TICK_S = 0.02
MAX_BLOCKS_PER_TICK = 50  # catch-up bound after a stall of the event loop


def update_markets(world: World, rng: random.Random, now_s: float, count: int = 2) -> list[str]:
    """Move a few open markets: price by a tick or three, volume up, sometimes resolved. Returns their ids."""
    candidates = [m for m in world.catalogue.markets if m.listing == LISTED and not m.closed]
    changed = []
    for market in rng.sample(candidates, min(count, len(candidates))):
        step = rng.choice((-3, -2, -1, 1, 2, 3)) * market.tick
        market.price = round(min(max(market.price + step, market.tick), 1 - market.tick), 4)
        market.volume = round(market.volume + rng.uniform(5, 5_000), 6)
        market.updated_s = now_s
        if rng.random() < 0.05:
            market.closed, market.price = True, float(rng.choice((0, 1)))
        event = world.catalogue.events[market.event_index]
        event.updated_s = now_s
        event.closed = all(world.catalogue.markets[i].closed for i in event.market_indexes)
        changed.append(market.id)
    return changed


class LiveClock:
    """Produces a block every `live_block_interval_s(rate)` while rate > 0, and updates markets."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rate = world.config.rate
        self.rng = random.Random(f"live-markets:{world.seed}")
        self.market_updates = 0
        path = world.config.chain_state_file
        self.state_path = Path(path) if path else None

    async def run(self) -> None:
        next_block_s = next_update_s = time.time()
        while True:
            now_s = time.time()
            self.world.refresh_listing(now_s)
            if self.rate > 0:
                interval_s = self.world.live_block_interval_s(self.rate)
                produced = 0
                while next_block_s <= now_s and produced < MAX_BLOCKS_PER_TICK:
                    self.world.produce_block(self.rate, now_s)
                    next_block_s += interval_s
                    produced += 1
                if produced and self.state_path is not None:  # before any request can see the new blocks
                    save_chain_state(self.state_path, self.world.chain_state)
                if next_block_s <= now_s:
                    next_block_s = now_s + interval_s
                if next_update_s <= now_s:
                    update_markets(self.world, self.rng, now_s)
                    self.market_updates += 1
                    next_update_s = now_s + self.world.config.market_update_interval_s
            else:
                next_block_s = next_update_s = now_s
            await asyncio.sleep(TICK_S)
