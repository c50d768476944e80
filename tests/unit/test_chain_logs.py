"""OrderFilled log decoding (logs built here with eth-abi), RPC error classification, range sizing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from eth_abi import decode, encode
from eth_hash.auto import keccak

from common.errors import PermanentSourceError, PoisonMessage, TransientSourceError
from common.exchanges import ALL_EXCHANGES, EXCHANGE_V3, V1_ABI, V2_ABI
from common.exchanges import V1_EXCHANGES as EXCHANGES_V1
from common.exchanges import V2_EXCHANGES as EXCHANGES_V2
from common.payloads import decode_dead_letter, decode_order_event
from ingesters.bounded_cache import BoundedCache
from ingesters.chain_logs import (
    ChainLog,
    as_chain_log,
    blocks_needing_timestamps,
    decode_data_words,
    decode_logs_reply,
    decode_order_filled,
    get_logs_filter,
    log_position,
    normalize_logs,
)
from ingesters.json_rpc import (
    RangeTooLarge,
    SpanSizer,
    block_batch,
    classify_rpc_error,
    decode_block_batch,
    hex_quantity,
    parse_block_batch,
    rpc_result,
)

TX = "0x" + "AA" * 32
ORDER = "0x" + "0b" * 32
MAKER = "0x" + "12" * 20
TAKER = "0x" + "Ef" * 20
TOKEN = 10181859819235412241349111952383458602722012323104397550162049365057126390549
POSITION_ID = (1 << 248) | (0xBEEF << 120) | (2 << 104) | 1  # Binary module, arity 2, outcome 1
V1_TOPIC, V2_TOPIC = V1_ABI.topic, V2_ABI.topic


def topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:]


def v1_log(maker_asset: int, taker_asset: int, **override: Any) -> dict[str, Any]:
    data = encode(["uint256"] * 5, [maker_asset, taker_asset, 5_000_000, 10_000_000, 25])
    log = {
        "address": EXCHANGES_V1[1].upper().replace("0X", "0x"),
        "topics": [V1_TOPIC, ORDER, topic(MAKER), topic(TAKER)],
        "data": "0x" + data.hex(),
        "blockNumber": hex(84_000_000),
        "transactionHash": TX,
        "logIndex": "0x1f",
        "removed": False,
    }
    return {**log, **override}


def v2_log(side: int, *, token: int = TOKEN, address: str = EXCHANGES_V2[0], **override: Any) -> dict[str, Any]:
    types = ["uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"]
    data = encode(types, [side, token, 7_000_000, 3_000_000, 11, b"\x01" * 32, b"\x00" * 32])
    log = v1_log(0, TOKEN, address=address, topics=[V2_TOPIC, ORDER, topic(MAKER), topic(TAKER)])
    return {**log, "data": "0x" + data.hex(), **override}


def test_topics_are_the_keccak_of_the_signatures() -> None:
    sig = "OrderFilled(bytes32,address,address,uint256,uint256,uint256,uint256,uint256)"
    assert keccak(sig.encode()).hex() == V1_TOPIC[2:]
    assert V1_TOPIC == "0xd0a08e8c493f9c94f29311604c9de1b4e8c8d4c06bd0c789af57f2d65bfec0f6"
    assert V2_TOPIC != V1_TOPIC and len(V2_TOPIC) == 66


def test_v1_log_decodes_to_the_normalized_event() -> None:
    event = decode_order_filled(v1_log(0, TOKEN), timestamp=1_777_000_000)
    assert event.id == f"{TX.lower()}_{ORDER}" and event.source == "chain"
    assert event.exchange == EXCHANGES_V1[1] and event.block_number == 84_000_000 and event.log_index == 31
    assert (event.maker, event.taker) == (MAKER, TAKER.lower())
    assert (event.maker_asset_id, event.taker_asset_id) == ("0", str(TOKEN))
    assert (event.maker_amount, event.taker_amount, event.fee, event.timestamp) == (
        5_000_000,
        10_000_000,
        25,
        1_777_000_000,
    )


@pytest.mark.parametrize(("side", "maker_asset", "taker_asset"), [(0, "0", str(TOKEN)), (1, str(TOKEN), "0")])
def test_v2_side_maps_to_the_v1_asset_shape(side: int, maker_asset: str, taker_asset: str) -> None:
    event = decode_order_filled(v2_log(side), timestamp=1_777_400_000)
    assert (event.maker_asset_id, event.taker_asset_id) == (maker_asset, taker_asset)
    assert (event.maker_amount, event.taker_amount, event.fee) == (7_000_000, 3_000_000, 11)
    assert event.exchange == EXCHANGES_V2[0]


def test_an_exchange_v3_log_decodes_with_the_v2_abi_and_keeps_its_position_id() -> None:
    event = decode_order_filled(v2_log(1, token=POSITION_ID, address=EXCHANGE_V3), timestamp=1_777_500_000)
    assert (event.maker_asset_id, event.taker_asset_id) == (str(POSITION_ID), "0")
    assert event.exchange == EXCHANGE_V3


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (v1_log(0, TOKEN, data="0x1234"), "undecodable"),
        (v1_log(TOKEN, TOKEN), "exactly one asset id"),
        (v1_log(0, 0), "exactly one asset id"),
        (v2_log(2), "side 2"),
        (v1_log(0, TOKEN, topics=[V1_TOPIC, ORDER, topic(MAKER)]), "not an OrderFilled"),
        (v1_log(0, TOKEN, topics=["0x" + "00" * 32, ORDER, topic(MAKER), topic(TAKER)]), "not an OrderFilled"),
        (v2_log(0, address=EXCHANGES_V1[0]), "not an OrderFilled log of CTF Exchange"),  # the ABI of its family
        (v1_log(0, TOKEN, address="0x" + "99" * 20), "not an exchange"),
        ({k: v for k, v in v1_log(0, TOKEN).items() if k != "transactionHash"}, "transactionHash"),
        (v1_log(0, TOKEN, logIndex=None), "logIndex"),
    ],
)
def test_malformed_log_is_poison_with_a_reason(log: dict[str, Any], reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        decode_order_filled(log, timestamp=1)


MAX = 2**256 - 1


@pytest.mark.parametrize(
    ("types", "values"),
    [
        (V1_ABI.data_types, [0, 0, 0, 0, 0]),
        (V1_ABI.data_types, [MAX, 0, MAX, MAX, MAX]),
        (V1_ABI.data_types, [0, TOKEN, 2**64 - 1, 2**64, 1]),
        (V2_ABI.data_types, [0, 0, 0, 0, 0, b"\x00" * 32, b"\x00" * 32]),
        (V2_ABI.data_types, [1, MAX, MAX, 2**64 - 1, MAX, b"\xff" * 32, b"\x01" * 32]),
        (V2_ABI.data_types, [255, TOKEN, 7_000_000, 3_000_000, 11, b"\x01" * 32, b"\x00" * 32]),
    ],
)
def test_data_words_read_directly_match_eth_abi(types: tuple[str, ...], values: list[Any]) -> None:
    data = encode(list(types), values)
    expected = [int.from_bytes(v, "big") if isinstance(v, bytes) else v for v in decode(list(types), data)]
    assert decode_data_words("0x" + data.hex(), len(types)) == expected
    assert decode_data_words("0x" + data.hex() + "00" * 32, len(types)) == expected  # trailing data is not read


def test_v1_and_v2_logs_with_edge_token_ids_decode_like_eth_abi() -> None:
    for token in (1, MAX, TOKEN):
        event = decode_order_filled(v1_log(token, 0), timestamp=1)
        assert (event.maker_asset_id, event.taker_asset_id) == (str(token), "0")
        v2 = encode(list(V2_ABI.data_types), [1, token, 2**64 - 1, 0, 0, b"\x00" * 32, b"\x00" * 32])
        event = decode_order_filled(v2_log(1, data="0x" + v2.hex()), timestamp=1)
        assert (event.maker_asset_id, event.maker_amount) == (str(token), 2**64 - 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [("0x", "undecodable"), ("0x" + "00" * 159, "undecodable"), ("0xzz" + "00" * 160, "undecodable"), (None, "data")],
)
def test_short_or_non_hex_data_is_poison(data: Any, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        decode_order_filled(v1_log(0, TOKEN, data=data), timestamp=1)


def rpc_body(result: list[Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": result})


def test_a_logs_reply_decodes_to_typed_logs_that_give_the_events_plain_json_gives() -> None:
    logs = [v2_log(1, logIndex="0x2", blockHash="0x" + "cd" * 32, transactionIndex="0x0"), v1_log(0, TOKEN)]
    reply = decode_logs_reply(rpc_body(logs))
    assert reply["id"] == 1 and all(isinstance(log, ChainLog) for log in reply["result"])
    typed, plain = normalize_logs(reply["result"], {84_000_000: 7}), normalize_logs(logs, {84_000_000: 7})
    assert typed == plain and len(typed[0]) == 2 and typed[1] == []
    assert [decode_order_event(entry).log_index for entry in typed[0]] == [2, 31]  # (block, log index) order


def test_a_reply_with_an_item_that_is_no_log_dead_letters_that_item_raw_and_ingests_the_rest() -> None:
    missing = {k: v for k, v in v1_log(0, TOKEN, logIndex="0x5").items() if k != "data"}
    reply = decode_logs_reply(rpc_body([v1_log(0, TOKEN), missing, "not a log"]))
    entries, dead = normalize_logs(reply["result"], {84_000_000: 7})
    assert [decode_order_event(entry).log_index for entry in entries] == [31]
    letters = [decode_dead_letter(d) for d in dead]
    assert orjson.loads(letters[0].payload) == missing and "data" in letters[0].error
    assert orjson.loads(letters[1].payload) == "not a log" and "malformed log" in letters[1].error


def test_a_dead_letter_of_a_typed_log_carries_the_whole_log() -> None:
    log = v1_log(TOKEN, TOKEN, blockHash="0x" + "cd" * 32, transactionIndex="0x3")  # two asset ids: poison
    entries, dead = normalize_logs(decode_logs_reply(rpc_body([log]))["result"], {84_000_000: 7})
    assert entries == [] and orjson.loads(decode_dead_letter(dead[0]).payload) == {**log, "blockTimestamp": None}


def test_an_rpc_error_reply_is_returned_as_plain_json_for_rpc_result() -> None:
    error = {"code": -32005, "message": "block range is too large"}
    reply = decode_logs_reply(orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": error}))
    with pytest.raises(RangeTooLarge):
        rpc_result(reply, "eth_getLogs")


def test_amount_over_uint64_is_poison() -> None:
    data = encode(["uint256"] * 5, [0, TOKEN, 2**80, 1, 0])
    with pytest.raises(PoisonMessage, match="maker_amount"):
        decode_order_filled(v1_log(0, TOKEN, data="0x" + data.hex()), timestamp=1)


def test_filter_covers_both_abis_and_all_five_exchanges() -> None:
    flt = get_logs_filter(10, 20)
    assert flt["fromBlock"] == "0xa" and flt["toBlock"] == "0x14"
    assert set(flt["address"]) == set(EXCHANGES_V1 + EXCHANGES_V2 + (EXCHANGE_V3,)) == ALL_EXCHANGES
    assert all(a == a.lower() for a in flt["address"])
    assert flt["topics"] == [[V1_TOPIC, V2_TOPIC]]
    assert log_position(as_chain_log(v1_log(0, TOKEN))) == (84_000_000, 31)
    assert log_position(as_chain_log(v1_log(0, TOKEN, blockNumber="0xzz"))) == (-1, -1)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"code": -32005, "message": "query returned more than 10000 results. Try with this block range"}, "range"),
        ({"code": -32005, "message": "block range is too large (max 2000 blocks)"}, "range"),
        ({"code": -32602, "message": "Log response size exceeded. You can make eth_getLogs requests with..."}, "range"),
        ({"code": -32000, "message": "exceed maximum block range: 3500"}, "range"),
        ({"code": -32602, "message": "eth_getLogs block range too large, range: 5001, max: 5000"}, "range"),
        ({"code": -32005, "message": "limit exceeded"}, "range"),
        ({"code": -32005, "message": "project ID request rate exceeded"}, "transient"),
        ({"code": 429, "message": "Too Many Requests"}, "transient"),
        ({"code": -32603, "message": "internal error"}, "transient"),
        ({"code": -32000, "message": "header not found"}, "transient"),
        ({"code": -32601, "message": "the method eth_getLogs does not exist/is not available"}, "permanent"),
        ({"code": -32602, "message": "invalid argument 0: hex string without 0x prefix"}, "permanent"),
    ],
)
def test_rpc_errors_are_classified(error: dict[str, Any], kind: str) -> None:
    assert classify_rpc_error(error) == kind


def test_span_halves_on_range_errors_and_grows_back_below_the_failed_size() -> None:
    sizer = SpanSizer(span=1000, max_span=10_000)
    sizer.succeeded()
    assert sizer.span == 2000
    sizer.succeeded()
    sizer.too_large({"code": -32005, "message": "block range is too large"}, from_block=100, tried_span=4000)
    assert sizer.span == 2000
    for _ in range(5):
        sizer.succeeded()
    assert sizer.span == 3999  # capped below the span that failed
    sizer.too_large({"code": -32005, "message": "x", "data": {"from": hex(100), "to": hex(349)}}, 100, 3999)
    assert sizer.span == 250  # the provider's own hint
    for _ in range(60):
        sizer.succeeded()
    assert sizer.span == 10_000  # the cap is forgotten after a long run of successes


def test_span_never_drops_below_one() -> None:
    sizer = SpanSizer(span=1, max_span=10)
    sizer.too_large({"message": "range too large"}, from_block=5, tried_span=1)
    assert sizer.span == 1


def test_bounded_cache_evicts_least_recently_used() -> None:
    cache: BoundedCache[int, int] = BoundedCache(2)
    cache.put(1, 10)
    cache.put(2, 20)
    assert cache.get(1) == 10
    cache.put(3, 30)
    assert (cache.get(2), cache.get(1), cache.get(3), len(cache)) == (None, 10, 30, 2)


def test_block_batch_reply_keeps_what_arrived_and_reports_the_rest() -> None:
    body = block_batch([10, 11, 12])
    assert [item["params"] for item in body] == [["0xa", False], ["0xb", False], ["0xc", False]]
    replies = [
        {"jsonrpc": "2.0", "id": 12, "result": {"number": "0xc", "timestamp": "0x64"}},  # out of order is fine
        {"jsonrpc": "2.0", "id": 10, "result": {"number": "0xa", "timestamp": "0x62"}},
        {"jsonrpc": "2.0", "id": 11, "error": {"code": -32603, "message": "internal error"}},
    ]
    timestamps, failures = parse_block_batch(replies, [10, 11, 12])
    assert timestamps == {10: 0x62, 12: 0x64}
    assert len(failures) == 1 and isinstance(failures[0], TransientSourceError)


def test_a_decoded_batch_reply_reads_as_its_plain_json_does_for_every_kind_of_reply() -> None:
    replies = [
        {"jsonrpc": "2.0", "id": 10, "result": {"number": "0xa", "timestamp": "0x62", "transactions": ["0x01"]}},
        {"jsonrpc": "2.0", "id": 11, "error": {"code": -32603, "message": "internal error"}},
        {"jsonrpc": "2.0", "id": 12, "result": None},  # not available (yet)
        {"jsonrpc": "2.0", "id": 13},  # neither result nor error: malformed
        {"jsonrpc": "2.0", "id": 14, "result": {"number": "0xe"}},  # no timestamp
        {"jsonrpc": "2.0", "id": 15, "result": {"timestamp": "0x70"}},
    ]
    blocks = list(range(10, 17))  # 16: no reply at all
    typed, plain = decode_block_batch(orjson.dumps(replies)), orjson.loads(orjson.dumps(replies))
    assert not any("jsonrpc" in reply for reply in typed)  # the typed pass kept only what is read
    (typed_stamps, typed_failures), (stamps, failures) = (
        parse_block_batch(typed, blocks),
        parse_block_batch(plain, blocks),
    )
    assert typed_stamps == stamps == {10: 0x62, 15: 0x70}
    assert [str(f) for f in typed_failures] == [str(f) for f in failures] and len(failures) == 5
    refused = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "batch not allowed"}}'
    assert decode_block_batch(refused) == orjson.loads(refused)
    assert decode_block_batch(b'[{"id": 1, "result": "0x5"}]') == [{"id": 1, "result": "0x5"}]
    with pytest.raises(ValueError):
        decode_block_batch(b'[{"id": 1, "result": {"timest')


def test_a_batch_refused_as_a_whole_raises_the_classified_error() -> None:
    with pytest.raises(PermanentSourceError, match="-32600"):
        parse_block_batch(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch not allowed"}}, [1]
        )


def test_rpc_result_maps_errors_to_what_the_caller_does() -> None:
    assert rpc_result({"jsonrpc": "2.0", "id": 1, "result": "0x10"}, "eth_blockNumber") == "0x10"
    with pytest.raises(RangeTooLarge):
        rpc_result({"id": 1, "error": {"code": -32005, "message": "query returned more than 10000 results"}}, "x")
    with pytest.raises(TransientSourceError, match="malformed"):
        rpc_result({"id": 1}, "eth_getLogs")
    assert hex_quantity("0x1f", "n") == 31
    with pytest.raises(TransientSourceError):
        hex_quantity(None, "eth_blockNumber")


def test_a_carried_block_timestamp_is_used_and_its_block_not_asked_for_and_removed_logs_are_skipped() -> None:
    carried = v1_log(0, TOKEN, blockTimestamp=hex(1_777_000_123))
    other_block = v1_log(0, TOKEN, blockNumber=hex(84_000_001), logIndex="0x1")
    removed = v1_log(0, TOKEN, blockNumber=hex(84_000_002), removed=True)
    reply = decode_logs_reply(rpc_body([other_block, removed, carried]))
    assert blocks_needing_timestamps(reply["result"]) == {84_000_001, 84_000_002}
    entries, dead = normalize_logs(reply["result"], {84_000_001: 9})
    events = [decode_order_event(entry) for entry in entries]
    assert [(e.block_number, e.timestamp) for e in events] == [(84_000_000, 1_777_000_123), (84_000_001, 9)]
    assert dead == []
