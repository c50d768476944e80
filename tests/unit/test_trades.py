"""derive_trade against an independent computation with Decimal arithmetic (docs/CONTRACT.md §4,
docs/upstream.md §3)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from common.exchanges import CTF_EXCHANGE_V1, EXCHANGE_V3, NEG_RISK_CTF_EXCHANGE_V2
from common.payloads import MarketRef, OrderEvent, fill_id
from processors.trades import derive_trade, micros_to_decimal

TOKEN = "8851848546962572193739008211889046036776198486765606333032192644001246174440"
MARKET = MarketRef(market_id="1066851", condition_id="0x2e6a", outcome="Up", outcome_index=0, question="BTC up?")


def fill(*, maker_asset: str, taker_asset: str, maker_amount: int, taker_amount: int, taker: str) -> OrderEvent:
    tx, order = "0x" + "ab" * 32, "0x" + "cd" * 32
    return OrderEvent(
        id=fill_id(tx, order), source="chain", exchange=CTF_EXCHANGE_V1, block_number=84_000_000, log_index=7,
        tx_hash=tx, order_hash=order, timestamp=1_777_000_000, maker="0x" + "11" * 20, taker=taker,
        maker_asset_id=maker_asset, taker_asset_id=taker_asset, maker_amount=maker_amount,
        taker_amount=taker_amount, fee=1234,
    )  # fmt: skip


@pytest.mark.parametrize("maker_buys", [True, False])
@pytest.mark.parametrize(
    "taker", [CTF_EXCHANGE_V1, NEG_RISK_CTF_EXCHANGE_V2.upper().replace("0X", "0x"), EXCHANGE_V3, "0x" + "22" * 20]
)
def test_trade_columns_match_an_independent_computation(maker_buys: bool, taker: str) -> None:
    usdc, tokens = 5_850_000, 10_000_001
    event = fill(
        maker_asset="0" if maker_buys else TOKEN,
        taker_asset=TOKEN if maker_buys else "0",
        maker_amount=usdc if maker_buys else tokens,
        taker_amount=tokens if maker_buys else usdc,
        taker=taker,
    )
    trade = derive_trade(event, MARKET)

    expected_usd = Decimal(usdc) / Decimal(10**6)
    expected_tokens = Decimal(tokens) / Decimal(10**6)
    assert trade.token_id == TOKEN
    assert trade.maker_direction == ("BUY" if maker_buys else "SELL")
    assert trade.taker_direction == ("SELL" if maker_buys else "BUY")
    assert Decimal(trade.usd_amount) == expected_usd
    assert Decimal(trade.token_amount) == expected_tokens
    assert trade.price == pytest.approx(float(expected_usd / expected_tokens), rel=1e-12)
    assert trade.is_taker_side == (taker.lower() != "0x" + "22" * 20)
    assert (trade.market_id, trade.condition_id, trade.outcome, trade.outcome_index) == ("1066851", "0x2e6a", "Up", 0)
    assert (trade.fee, trade.log_index, trade.block_number, trade.id) == (1234, 7, 84_000_000, event.id)


def test_unknown_market_leaves_market_empty_and_outcome_index_minus_one() -> None:
    event = fill(maker_asset="0", taker_asset=TOKEN, maker_amount=1, taker_amount=2, taker="0x" + "22" * 20)
    trade = derive_trade(event, None)
    assert (trade.market_id, trade.condition_id, trade.outcome, trade.outcome_index) == ("", "", "", -1)
    assert trade.token_id == TOKEN


def test_a_position_id_without_market_keeps_the_outcome_index_it_encodes() -> None:
    combo = str((3 << 248) | (0xABC << 120) | (2 << 104) | 1)  # module 3 (Combinatorial), arity 2, outcome 1
    event = fill(maker_asset=combo, taker_asset="0", maker_amount=4, taker_amount=2, taker=EXCHANGE_V3)
    trade = derive_trade(event, None)
    assert (trade.market_id, trade.condition_id, trade.outcome, trade.outcome_index) == ("", "", "", 1)
    assert trade.token_id == combo and trade.is_taker_side == 1


def test_zero_token_amount_gives_zero_price_not_a_crash() -> None:
    event = fill(maker_asset="0", taker_asset=TOKEN, maker_amount=5, taker_amount=0, taker="0x" + "22" * 20)
    assert derive_trade(event, MARKET).price == 0.0


@pytest.mark.parametrize(
    ("units", "text"),
    [
        (0, "0.000000"), (1, "0.000001"), (999_999, "0.999999"), (1_000_000, "1.000000"), (1_500_000, "1.500000"),
        (10_000_001, "10.000001"), (123_456_789_012, "123456.789012"), (2**64 - 1, "18446744073709.551615"),
    ],
)  # fmt: skip
def test_micros_to_decimal_is_exact(units: int, text: str) -> None:
    assert micros_to_decimal(units) == text


def test_micros_to_decimal_matches_decimal_arithmetic_across_magnitudes() -> None:
    rng = random.Random(7)
    for units in [rng.randrange(10**digits) for digits in range(1, 21) for _ in range(50)]:
        assert Decimal(micros_to_decimal(units)) == Decimal(units) / 10**6
        assert len(micros_to_decimal(units).partition(".")[2]) == 6
