"""common.payloads: every payload that crosses Redis survives its round trip, keeps its field names, and
malformed input fails the way its readers expect (PoisonMessage for stream entries, a readable value for
what operators look at)."""

from __future__ import annotations

import gc
import time

import msgspec
import orjson
import pytest

from common.errors import PoisonMessage
from common.payloads import (
    DeadLetter,
    Heartbeat,
    MarketRef,
    OrderEvent,
    Trade,
    decode_dead_letter,
    decode_heartbeat,
    decode_market_ref,
    decode_order_event,
    decode_trade,
    encode_dead_letter,
    encode_heartbeat,
    encode_market_ref,
    encode_order_event,
    encode_trade,
    encode_valid_order_event,
    fill_id,
)

TX, ORDER = "0x" + "ab" * 32, "0x" + "cd" * 32
EVENT = OrderEvent(id=fill_id(TX, ORDER), source="chain", exchange="0xe1", block_number=5, log_index=3, tx_hash=TX,
                   order_hash=ORDER, timestamp=1_777_000_000, maker="0xa", taker="0xb", maker_asset_id="0",
                   taker_asset_id="123", maker_amount=5_850_000, taker_amount=10_000_001, fee=3)  # fmt: skip
TRADE = Trade(id=EVENT.id, timestamp=1_777_000_000, block_number=5, tx_hash=TX, log_index=None, order_hash=ORDER,
              source="chain", exchange="0xe1", market_id="1066851", condition_id="0x2e6a", token_id="123",
              outcome="Up", outcome_index=0, maker="0xa", taker="0xb", maker_direction="BUY", taker_direction="SELL",
              price=0.585, usd_amount="5.850000", token_amount="10.000001", fee=3, is_taker_side=1)  # fmt: skip
MARKET = MarketRef(market_id="1066851", condition_id="0x2e6a", outcome="Down", outcome_index=1, question='"Up"?')


def test_order_event_round_trips_and_garbage_is_poison() -> None:
    assert decode_order_event(encode_order_event(EVENT)) == EVENT
    with pytest.raises(PoisonMessage, match="invalid order event"):
        decode_order_event(b"not json")


@pytest.mark.parametrize(
    "changes",
    [
        {}, {"log_index": None}, {"maker_amount": 2**64 - 1}, {"maker_amount": 2**64}, {"fee": -1}, {"timestamp": 1.5},
        {"block_number": True}, {"log_index": -1}, {"log_index": "3"}, {"source": "rpc"}, {"maker": None},
        {"tx_hash": 5}, {"maker_asset_id": "12a"}, {"maker_asset_id": ""}, {"taker_asset_id": "1" * 79},
        {"taker_asset_id": 123}, {"taker_asset_id": "0"}, {"id": "other"},
        {"maker_asset_id": "7", "taker_asset_id": "0"},
    ],
)  # fmt: skip
def test_built_events_are_validated_like_the_decoder_validates_their_bytes(changes: dict) -> None:
    # the oracle: encode the event as is, then decode and check the bytes (what the ingesters used to do)
    event = msgspec.structs.replace(EVENT, **changes)
    try:
        expected = decode_order_event(msgspec.json.encode(event))
    except PoisonMessage:
        expected = None
    if expected is None:
        with pytest.raises(PoisonMessage, match="invalid order event"):
            encode_valid_order_event(event)
    else:
        assert decode_order_event(encode_valid_order_event(event)) == expected


@pytest.mark.parametrize("field", ["maker_amount", "taker_amount", "fee", "block_number", "timestamp"])
def test_every_amount_is_bounded_by_uint64_alone_and_with_the_others_at_the_limit(field: str) -> None:
    at_limit = msgspec.structs.replace(EVENT, maker_amount=2**64 - 1, taker_amount=2**63, fee=2**64 - 1,
                                       block_number=2**63 - 1, timestamp=2**64 - 1)  # fmt: skip
    assert decode_order_event(encode_order_event(at_limit)) == at_limit
    beyond = msgspec.structs.replace(at_limit, **{field: 2**64})
    for check in (lambda: decode_order_event(msgspec.json.encode(beyond)), lambda: encode_valid_order_event(beyond)):
        with pytest.raises(PoisonMessage, match=f"{field} beyond UInt64"):
            check()


def test_decoded_order_events_are_not_tracked_by_the_collector() -> None:
    # one a fill: their fields are scalars and can hold no cycle (payloads.OrderEvent)
    assert not gc.is_tracked(decode_order_event(encode_order_event(EVENT)))


def test_trade_round_trips_with_exact_decimal_strings() -> None:
    data = encode_trade(TRADE)
    assert orjson.loads(data)["usd_amount"] == "5.850000"
    assert decode_trade(data) == TRADE


@pytest.mark.parametrize("data", [b"{", b"[]", encode_trade(TRADE).replace(b'"fee":3', b'"fee":"3"')])
def test_malformed_trade_is_poison_with_the_reason(data: bytes) -> None:
    with pytest.raises(PoisonMessage, match="invalid trade"):
        decode_trade(data)


def test_market_ref_round_trips_under_its_field_names() -> None:
    data = encode_market_ref(MARKET)
    assert orjson.loads(data) == {"market_id": "1066851", "condition_id": "0x2e6a", "outcome": "Down",
                                  "outcome_index": 1, "question": '"Up"?'}  # fmt: skip
    assert decode_market_ref(data) == MARKET
    without_question = {"market_id": "1", "condition_id": "", "outcome": "Yes", "outcome_index": 0}
    assert decode_market_ref(orjson.dumps(without_question)).question == ""


@pytest.mark.parametrize("data", [b"", b"null", b'{"market_id": "1"}', b'{"market_id": 1, "condition_id": ""}'])
def test_malformed_market_ref_is_poison_with_the_reason(data: bytes) -> None:
    with pytest.raises(PoisonMessage, match="invalid market ref"):
        decode_market_ref(data)


def test_dead_letter_keeps_the_json_operators_read() -> None:
    before = time.time()
    data = encode_dead_letter(stream="stream:trades", entry_id="9-1", payload=b"\xff{}", error="boom", deliveries=4,
                              group="clickhouse-writer")  # fmt: skip
    raw = orjson.loads(data)
    assert list(raw) == ["stream", "group", "id", "item", "payload", "error", "deliveries", "time"]
    assert raw["id"] == "9-1" and raw["payload"] == "\ufffd{}" and raw["deliveries"] == 4
    assert before - 0.001 <= raw["time"] <= time.time() + 0.001
    letter = decode_dead_letter(data)
    assert letter == DeadLetter(stream="stream:trades", group="clickhouse-writer", entry_id="9-1",
                                payload="\ufffd{}", error="boom", deliveries=4, time=raw["time"])  # fmt: skip


def test_ingester_dead_letter_has_no_entry_id_and_no_group() -> None:
    data = encode_dead_letter(stream="stream:markets", entry_id=None, payload='{"id": 1}', error="bad", deliveries=0)
    assert orjson.loads(data)["id"] is None and orjson.loads(data)["group"] == ""
    assert decode_dead_letter(data).entry_id is None


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'{"stream": 5}', b'{"deliveries": "many"}'])
def test_unreadable_dead_letter_still_reads_as_its_raw_text_and_the_reason(data: bytes) -> None:
    letter = decode_dead_letter(data)
    assert letter.error.startswith("unparseable dead letter: ") and letter.payload == data.decode()
    assert letter.entry_id is None and letter.stream == ""


def test_dead_letter_entry_without_data_reads_as_empty() -> None:
    assert decode_dead_letter(None) == DeadLetter()


def as_hash(fields: dict[str, str]) -> dict[bytes, bytes]:
    """What HGETALL returns for an HSET of `fields`."""
    return {key.encode(): value.encode() for key, value in fields.items()}


def test_heartbeat_round_trips_through_its_hash_fields() -> None:
    heartbeat = Heartbeat(state="degraded", pid=42, host="box", started_at=1_800_000_000.5,
                          heartbeat_at=1_800_000_100.25, last_error="HTTP 503", last_error_at=1_800_000_099.0,
                          counters={"fills": 12, "rows_trades": 3})  # fmt: skip
    fields = encode_heartbeat(heartbeat)
    assert fields == {"state": "degraded", "pid": "42", "host": "box", "started_at": "1800000000.500",
                      "heartbeat_at": "1800000100.250", "last_error": "HTTP 503", "last_error_at": "1800000099.000",
                      "count:fills": "12", "count:rows_trades": "3"}  # fmt: skip
    assert decode_heartbeat(as_hash(fields)) == heartbeat


def test_heartbeat_with_bad_values_reads_them_as_unknown() -> None:
    fields = {"state": "running", "pid": "-1", "heartbeat_at": "soon", "started_at": "nan", "last_error_at": "inf",
              "count:fills": "12.0", "count:bad": "x", "gauge:safe_head": "100"}  # fmt: skip
    heartbeat = decode_heartbeat(as_hash(fields))
    assert (heartbeat.pid, heartbeat.heartbeat_at, heartbeat.started_at, heartbeat.last_error_at) == (0, 0, 0, 0)
    assert heartbeat.counters == {"fills": 12, "bad": 0} and heartbeat.state == "running"
    assert decode_heartbeat({}) == Heartbeat()
