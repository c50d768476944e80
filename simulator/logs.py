"""ABI-encoded `OrderFilled` logs (v1 and v2 exchanges) for fills, as eth_getLogs returns them.

v1: OrderFilled(bytes32 indexed orderHash, address indexed maker, address indexed taker, uint256 makerAssetId,
    uint256 takerAssetId, uint256 makerAmountFilled, uint256 takerAmountFilled, uint256 fee)
v2: OrderFilled(bytes32 indexed orderHash, address indexed maker, address indexed taker, uint8 side,
    uint256 tokenId, uint256 makerAmountFilled, uint256 takerAmountFilled, uint256 fee, bytes32 builder,
    bytes32 metadata) — side is the maker order's side (BUY=0, SELL=1).
Data words are built as hex text directly (every field is a static 32-byte word), which is what eth-abi would
produce but ~50x faster.

`LogShape` gives the item shapes real nodes serve (docs/upstream.md): `blockTimestamp` on each log (newer nodes),
no `removed`/`blockHash`/`transactionIndex` (logs read from receipts), and the emitting address EIP-55
mixed-case (web3's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import orjson
from eth_hash.auto import keccak

from simulator.constants import EXCHANGE_ADDRESSES, V1_TOPIC, V2_TOPIC, block_hash_words, block_timestamp
from simulator.world import World, hex_rows

BUILDER_TAIL = np.frombuffer(bytes.fromhex("b0113e21"), np.uint8)  # a sample builder code in the last 4 bytes


def address_topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:]


def checksum_address(address: str) -> str:
    """EIP-55: a hex digit is upper-case where the keccak of the lowercase address has a nibble >= 8."""
    hexits = address.lower().removeprefix("0x")
    digest = keccak(hexits.encode()).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(hexits, digest, strict=False))


@dataclass(frozen=True)
class LogShape:
    """Which of the real item shapes eth_getLogs serves (combinable)."""

    block_timestamp: bool = False  # add `blockTimestamp` to each log
    bare: bool = False  # leave out `removed`, `blockHash` and `transactionIndex`
    checksum: bool = False  # the emitting address EIP-55 mixed-case

    def envelope(self, block: int, block_hash: str) -> str:
        """The block fields of a log, as JSON members."""
        text = f'"blockNumber":"{hex(block)}"' + ("" if self.bare else f',"blockHash":"{block_hash}"')
        return text + (f',"blockTimestamp":"{hex(block_timestamp(block))}"' if self.block_timestamp else "")

    def address(self, address: str) -> str:
        return checksum_address(address) if self.checksum else address


class LogRenderer:
    """Per-world caches (padded address topics, token words, block hashes) and the rendering loop."""

    def __init__(self, world: World) -> None:
        self.world = world

    @cached_property
    def wallet_topics(self) -> list[str]:
        return [address_topic(a) for a in self.world.wallet_hex]

    @cached_property
    def exchange_topics(self) -> list[str]:
        return [address_topic(a) for a in EXCHANGE_ADDRESSES]

    @cached_property
    def token_words(self) -> list[str]:
        return [f"{int(t):064x}" for t in self.world.token_id_list]

    def address_topic(self, code: int) -> str:
        return self.wallet_topics[code] if code >= 0 else self.exchange_topics[-code - 1]

    def render(self, idx: np.ndarray) -> list[dict[str, object]]:
        """Logs for fill indexes `idx` (already in log order) as dicts."""
        return orjson.loads(self.render_json(idx))

    @cached_property
    def token_bytes(self) -> np.ndarray:
        """(tokens, 32) uint8: each token id as a big-endian uint256 word."""
        raw = b"".join(int(t).to_bytes(32, "big") for t in self.world.token_id_list)
        return np.frombuffer(raw, np.uint8).reshape(-1, 32)

    def data_hex(self, idx: np.ndarray) -> list[str]:
        """The non-indexed part of each log (v1: 5 words, v2: 7 words), built as one byte array per version."""
        w = self.world
        exchange, buys, tokens = w.col("exchange")[idx], w.col("maker_buys")[idx], w.col("token")[idx]
        amounts = np.stack([w.col("maker_amount")[idx], w.col("taker_amount")[idx], w.col("fee")[idx]], axis=1)
        amount_bytes = amounts.astype(">u8").view(np.uint8).reshape(len(idx), 3, 8)
        token_words = self.token_bytes[tokens]
        out: list[str] = [""] * len(idx)
        for version2 in (False, True):
            rows = np.flatnonzero((exchange >= 2) == version2)
            if not len(rows):
                continue
            words = np.zeros((len(rows), 7 if version2 else 5, 32), np.uint8)
            b, t = buys[rows], token_words[rows]
            if version2:
                words[:, 0, 31] = ~b  # side: BUY=0, SELL=1
                words[:, 1] = t
                words[:, 5, 28:] = np.where((tokens[rows] % 5 == 0)[:, None], BUILDER_TAIL, 0)
            else:
                words[:, 0] = np.where(b[:, None], 0, t)  # makerAssetId: "0" (USDC) when the maker buys
                words[:, 1] = np.where(b[:, None], t, 0)
            words[:, 2:5, 24:] = amount_bytes[rows]
            text = words.tobytes().hex()
            width = words.shape[1] * 64
            for j, row in enumerate(rows.tolist()):
                out[row] = text[j * width : (j + 1) * width]
        return out

    def render_json(self, idx: np.ndarray, shape: LogShape = LogShape()) -> bytes:
        """The JSON array of logs for fill indexes `idx`, built as text (the hot path of eth_getLogs)."""
        w = self.world
        blocks, log_index = w.col("block")[idx].tolist(), w.col("log_index")[idx].tolist()
        tx_index, exchange = w.col("tx_index")[idx].tolist(), w.col("exchange")[idx].tolist()
        makers, takers = w.col("maker")[idx].tolist(), w.col("taker")[idx].tolist()
        tx_hashes, order_hashes, data = w.tx_hashes(idx), w.order_hashes(idx), self.data_hex(idx)
        wallet_topics, exchange_topics = self.wallet_topics, self.exchange_topics
        unique_blocks = np.unique(w.col("block")[idx])
        hashes = dict(zip(unique_blocks.tolist(), hex_rows(block_hash_words(w.seed, unique_blocks)), strict=True))
        addresses = [shape.address(a) for a in EXCHANGE_ADDRESSES]
        bare, removed_part = shape.bare, "" if shape.bare else ',"removed":false'
        out: list[str] = []
        last_block, block_part = -1, ""
        for i in range(len(blocks)):
            if blocks[i] != last_block:
                last_block = blocks[i]
                block_part = shape.envelope(last_block, hashes[last_block])
            maker, taker, code = makers[i], takers[i], exchange[i]
            maker_topic = wallet_topics[maker] if maker >= 0 else exchange_topics[-maker - 1]
            taker_topic = wallet_topics[taker] if taker >= 0 else exchange_topics[-taker - 1]
            tx_part = "" if bare else f'"transactionIndex":"{hex(tx_index[i])}",'
            out.append(
                f'{{"address":"{addresses[code]}","topics":["{V2_TOPIC if code >= 2 else V1_TOPIC}",'
                f'"{order_hashes[i]}","{maker_topic}","{taker_topic}"],"data":"0x{data[i]}",{block_part},'
                f'"transactionHash":"{tx_hashes[i]}",{tx_part}'
                f'"logIndex":"{hex(log_index[i])}"{removed_part}}}'
            )
        return ("[" + ",".join(out) + "]").encode()
