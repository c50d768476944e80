"""The Lua scripts of `lua/`, loaded once.

Each script gets `prelude.lua` in front (Redis scripts cannot import one another). Lists travel as ARGV elements,
one per item: Redis hands the script each one as a Lua string once, where a newline-joined blob had to be copied
again by a split in Lua; the client packs them with hiredis (`common.redis_client`), as fast as one blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

_LUA_DIR = Path(__file__).with_name("lua")
_PRELUDE = (_LUA_DIR / "prelude.lua").read_text()
_SCRIPTS = {
    name: _PRELUDE + (_LUA_DIR / f"{name}.lua").read_text()
    for name in ("append_page", "finish_batch", "retry_dead_letter", "acquire_lock", "release_lock")
}
_SHAS = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in _SCRIPTS.items()}


async def run_script(redis: aioredis.Redis, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA, loading the script on first use (or after a Redis restart without it)."""
    try:
        return await redis.evalsha(_SHAS[name], len(keys_), *keys_, *args)
    except redis_errors.NoScriptError:
        await redis.script_load(_SCRIPTS[name])
        return await redis.evalsha(_SHAS[name], len(keys_), *keys_, *args)
