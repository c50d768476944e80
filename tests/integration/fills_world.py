"""A small, deterministic world of markets and order fills for processor and writer tests.

Independent of the simulator on purpose: the expected trade of each fill is computed here with Decimal
arithmetic, from the fill and the market, without the pipeline's code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

import orjson
import redis.asyncio as aioredis

from common import keys
from common.events import OrderEvent, encode_order_event, fill_id
from common.exchanges import ALL_EXCHANGES, V1_EXCHANGES, V2_EXCHANGES


@dataclass(frozen=True)
class TestMarket:
    id: str
    condition_id: str
    outcomes: tuple[str, ...]
    token_ids: tuple[str, ...]

    def ref_json(self, index: int) -> bytes:
        ref = {"market_id": self.id, "condition_id": self.condition_id, "outcome": self.outcomes[index]}
        return orjson.dumps({**ref, "outcome_index": index, "question": f"Q{self.id}"})


def _hex(rng: random.Random, nbytes: int) -> str:
    return "0x" + rng.randbytes(nbytes).hex()


def make_markets(rng: random.Random, count: int) -> list[TestMarket]:
    markets = []
    for i in range(count):
        outcomes = ("Yes", "No") if i % 3 else ("Red", "Green", "Blue")  # some multi-outcome markets
        tokens = tuple(str(rng.randrange(10**75, 10**77)) for _ in outcomes)
        markets.append(TestMarket(str(500_000 + i), _hex(rng, 32), outcomes, tokens))
    return markets


def make_fills(
    rng: random.Random, markets: list[TestMarket], groups: int, *, start_ts: int = 1_777_000_000
) -> list[OrderEvent]:
    """Match groups: 1..4 maker fills plus the taker fill whose `taker` is the exchange, sharing tx and time."""
    fills = []
    for g in range(groups):
        market = rng.choice(markets)
        token = rng.choice(market.token_ids)
        v2 = g % 2 == 1
        exchange = rng.choice(V2_EXCHANGES if v2 else V1_EXCHANGES)
        tx, ts, block = _hex(rng, 32), start_ts + g // 7, 84_902_353 + g if v2 else 80_000_000 + g
        for position in range(rng.randint(1, 4) + 1):
            is_taker_row = position == 0
            maker_buys = rng.random() < 0.5
            usdc, tokens = rng.randrange(1, 10**9), rng.randrange(1, 10**9)
            order = _hex(rng, 32)
            fills.append(OrderEvent(
                id=fill_id(tx, order), source="chain" if g % 3 else "goldsky", exchange=exchange,
                block_number=block, log_index=position, tx_hash=tx, order_hash=order, timestamp=ts,
                maker=_hex(rng, 20), taker=exchange if is_taker_row else _hex(rng, 20),
                maker_asset_id="0" if maker_buys else token, taker_asset_id=token if maker_buys else "0",
                maker_amount=usdc if maker_buys else tokens, taker_amount=tokens if maker_buys else usdc,
                fee=rng.randrange(0, 10**6),
            ))  # fmt: skip
    return fills


def expected_trade(event: OrderEvent, markets: list[TestMarket]) -> dict[str, object]:
    """The trade of DESIGN §4, computed independently of processors/trades.py."""
    token = event.taker_asset_id if event.maker_asset_id == "0" else event.maker_asset_id
    buy = event.maker_asset_id == "0"
    usd = Decimal(event.maker_amount if buy else event.taker_amount) / Decimal(10**6)
    tokens = Decimal(event.taker_amount if buy else event.maker_amount) / Decimal(10**6)
    market, index = next(((m, m.token_ids.index(token)) for m in markets if token in m.token_ids), (None, -1))
    return {
        "id": event.id, "token_id": token, "maker_direction": "BUY" if buy else "SELL",
        "taker_direction": "SELL" if buy else "BUY", "usd_amount": usd, "token_amount": tokens,
        "price": float(usd / tokens), "is_taker_side": int(event.taker in ALL_EXCHANGES),
        "market_id": market.id if market else "", "condition_id": market.condition_id if market else "",
        "outcome": market.outcomes[index] if market else "", "outcome_index": index, "fee": event.fee,
        "block_number": event.block_number, "log_index": event.log_index, "source": event.source,
        "exchange": event.exchange, "maker": event.maker, "taker": event.taker, "timestamp": event.timestamp,
    }  # fmt: skip


async def publish_markets(redis: aioredis.Redis, markets: list[TestMarket]) -> None:
    mapping = {token: m.ref_json(i) for m in markets for i, token in enumerate(m.token_ids)}
    await redis.hset(keys.MARKETS_BY_TOKEN, mapping=mapping)


async def publish_fills(redis: aioredis.Redis, fills: list[OrderEvent], chunk: int = 5000) -> None:
    for start in range(0, len(fills), chunk):
        async with redis.pipeline(transaction=False) as pipe:
            for event in fills[start : start + chunk]:
                pipe.xadd(keys.STREAM_ORDER_EVENTS, {"data": encode_order_event(event)})
            await pipe.execute()
