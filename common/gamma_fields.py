"""Gamma's list fields (`outcomes`, `outcomePrices`, `clobTokenIds`), which arrive as JSON-encoded strings."""

from __future__ import annotations

from typing import Any

import orjson

from common.errors import PoisonMessage


def parse_json_list(value: Any, field: str) -> list[Any]:
    """The list a Gamma field holds: `"[\\"Yes\\", \\"No\\"]"`, or a real list (`positionIds` comes as one).

    Absent, null or "" mean empty. Anything else raises PoisonMessage naming the field.
    """
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    try:
        parsed = orjson.loads(value) if isinstance(value, str | bytes) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        raise PoisonMessage(f"{field} is not a JSON-encoded list: {str(value)[:80]!r}")
    return parsed
