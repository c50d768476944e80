"""What a Redis failover must not break (real redis-server, embedded ClickHouse): a batch's dedup token is its own,
so stream ids re-issued by a new primary never make ClickHouse drop another batch as a retry."""

from __future__ import annotations

import random

from common.clickhouse import apply_migrations
from common.payloads import encode_trade
from common.streams import Entry
from processors.trades import derive_trade
from tests.fixtures.fills_world import make_fills, make_markets
from tests.integration.test_writer_streams import TRADES_STREAM, counts, insert_as_the_writer


async def test_a_batch_under_reissued_stream_ids_is_stored_and_the_same_batch_again_is_dropped(
    redis_client, ch_settings
) -> None:
    apply_migrations(ch_settings)
    fills = make_fills(random.Random(23), make_markets(random.Random(23), 3), groups=40)
    half = len(fills) // 2
    stream_ids = [f"1777000000000-{n}" for n in range(half)]  # what a lagging new primary hands out again

    def entries(batch: list) -> list[Entry]:
        return [Entry(entry_id, encode_trade(derive_trade(fill, None)), 1)
                for entry_id, fill in zip(stream_ids, batch, strict=True)]  # fmt: skip

    lost_primary_batch, new_primary_batch = entries(fills[:half]), entries(fills[half : 2 * half])
    # no unique check (the bench knob): only the token stands between a batch and a second copy of it
    tokens_only = ch_settings.model_copy(update={"unique_keys": False})
    await insert_as_the_writer(redis_client, tokens_only, TRADES_STREAM, "trades", lost_primary_batch)
    await insert_as_the_writer(redis_client, tokens_only, TRADES_STREAM, "trades", lost_primary_batch)  # a replay
    assert counts(ch_settings, "trades") == (half, half)

    await insert_as_the_writer(redis_client, tokens_only, TRADES_STREAM, "trades", new_primary_batch)
    assert counts(ch_settings, "trades") == (2 * half, 2 * half)  # stream ids alone: it was dropped, (half, half)
