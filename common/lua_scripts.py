"""The Lua scripts of `lua/`, loaded once, and the one way to pass them lists.

Each script gets `prelude.lua` in front (Redis scripts cannot import one another). Lists travel as a single
argument, items joined by newlines: redis-py packs one large argument far faster than thousands of small ones
(measured, 5,000 entries of ~700 bytes: 0.05 µs per item to join; one argument per item costs 1.4 µs with
redis-py's asyncio packer and 1.1 µs with hiredis's, more than the script's split saves in Redis).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.crc import key_slot

from common.errors import ConfigError
from common.redis_client import is_cluster

_LUA_DIR = Path(__file__).with_name("lua")
_PRELUDE = (_LUA_DIR / "prelude.lua").read_text()
_SCRIPTS = {
    name: _PRELUDE + (_LUA_DIR / f"{name}.lua").read_text()
    for name in ("append_page", "finish_batch", "retry_dead_letter", "acquire_lock", "release_lock")
}
_SHAS = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in _SCRIPTS.items()}


async def run_script(redis: aioredis.Redis, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA, loading the script on first use (or after a Redis restart or failover without it: scripts are not
    replicated, a promoted replica has none). Every key a script touches comes in `keys_`; on Redis Cluster they
    must share one slot, checked here, the one place every script is called, before anything is sent."""
    if is_cluster(redis):
        check_one_slot(name, keys_)
    try:
        return await redis.evalsha(_SHAS[name], len(keys_), *keys_, *args)
    except redis_errors.NoScriptError:
        await redis.script_load(_SCRIPTS[name])
        return await redis.evalsha(_SHAS[name], len(keys_), *keys_, *args)


class CrossSlotKeys(ConfigError):
    """A script's keys hash to several Redis Cluster slots: REDIS_KEY_PREFIX lacks a hash tag, or a key escaped it."""


def check_one_slot(name: str, keys_: Sequence[str]) -> int:
    """The one slot of `keys_`; raises CrossSlotKeys naming the script, the keys and the setting otherwise."""
    slots = {key_slot(key.encode()) for key in keys_}
    if len(slots) != 1:
        raise CrossSlotKeys(
            f"script {name}: keys {', '.join(keys_)} hash to {len(slots)} Redis Cluster slots; set REDIS_KEY_PREFIX "
            "to a hash tag such as '{pm}:' (and move the keys: python -m pipeline migrate-keys)"
        )
    return slots.pop()


def join_lines(items: Iterable[bytes | str]) -> bytes:
    """Items joined by newlines, for the scripts' one-argument lists; an item may not be empty or hold a newline."""
    listed = list(items)
    try:  # all bytes (payloads) or all text (ids): one join in C, no encode per item
        joined = b"\n".join(cast(list[bytes], listed))
    except TypeError:
        try:
            joined = "\n".join(cast(list[str], listed)).encode()
        except TypeError:  # mixed (a hash's fields and values)
            joined = b"\n".join(item.encode() if isinstance(item, str) else item for item in listed)
    if _newlines(joined, len(listed)) != max(0, len(listed) - 1) or not all(listed):
        raise ValueError("stream payloads must be non-empty and contain no raw newline")
    return joined


# Average item length below which counting every byte beats one memchr per item (measured here on 5,000 items:
# even at 256 bytes, 0.11 µs an item against 0.19; at 1,024 bytes, 0.47 against 0.21)
_COUNT_BELOW_BYTES = 256


def _newlines(joined: bytes, items: int) -> int:
    """How many newlines `joined` (of `items` items) holds. bytes.count is a byte-by-byte loop in C, bytes.find of
    one byte a memchr but one Python iteration a newline: count for short items (ids, counts), find for long ones
    (payloads)."""
    if len(joined) < _COUNT_BELOW_BYTES * items:
        return joined.count(b"\n")
    count, at = 0, joined.find(b"\n")
    while at != -1:
        count += 1
        at = joined.find(b"\n", at + 1)
    return count
