"""From an order fill to a trade: the derivation of DESIGN §4 as pure functions (reference §3.5).

- token = the asset id that is not "0"; maker_direction = BUY if the maker paid USDC ("0"), else SELL;
  taker_direction is the opposite;
- usd_amount = the USDC leg / 1e6 and token_amount = the token leg / 1e6, exact decimals from the integers;
  price = usd_amount / token_amount;
- is_taker_side = 1 when `taker` is an exchange contract (any family of `common.exchanges`): those rows count each
  match once;
- without a market, outcome_index is still known for a Protocol V2 position id, which encodes it (a Combo's never
  has a market); a CTF token id's is -1.
"""

from __future__ import annotations

from common.exchanges import ALL_EXCHANGES
from common.payloads import MarketRef, OrderEvent, Trade
from common.position_ids import decode_position_id

USDC = "0"
UNKNOWN_OUTCOME_INDEX = -1


def token_of(event: OrderEvent) -> str:
    return event.maker_asset_id if event.maker_asset_id != USDC else event.taker_asset_id


def unowned_outcome_index(token_id: str) -> int:
    """The outcome index of a token no market is known for: a position id's own, else UNKNOWN_OUTCOME_INDEX."""
    position = decode_position_id(token_id)
    return position.outcome_index if position is not None else UNKNOWN_OUTCOME_INDEX


def micros_to_decimal(units: int) -> str:
    """6-decimal base units as an exact decimal string: 1500000 -> '1.500000'."""
    return f"{units // 1_000_000}.{units % 1_000_000:06d}"


def derive_trade(event: OrderEvent, market: MarketRef | None) -> Trade:
    maker_buys = event.maker_asset_id == USDC
    token_id = token_of(event)
    usdc_units, token_units = (
        (event.maker_amount, event.taker_amount) if maker_buys else (event.taker_amount, event.maker_amount)
    )
    return Trade(
        id=event.id,
        timestamp=event.timestamp,
        block_number=event.block_number,
        tx_hash=event.tx_hash,
        log_index=event.log_index,
        order_hash=event.order_hash,
        source=event.source,
        exchange=event.exchange,
        market_id=market.market_id if market else "",
        condition_id=market.condition_id if market else "",
        token_id=token_id,
        outcome=market.outcome if market else "",
        outcome_index=market.outcome_index if market else unowned_outcome_index(token_id),
        maker=event.maker,
        taker=event.taker,
        maker_direction="BUY" if maker_buys else "SELL",
        taker_direction="SELL" if maker_buys else "BUY",
        price=usdc_units / token_units if token_units else 0.0,
        usd_amount=micros_to_decimal(usdc_units),
        token_amount=micros_to_decimal(token_units),
        fee=event.fee,
        is_taker_side=int(event.taker.lower() in ALL_EXCHANGES),
    )
