"""Gamma's list fields (`outcomes`, `outcomePrices`, `clobTokenIds`), which arrive as JSON-encoded strings, and
its protocol versions (`version`, the `version` query key, which kind of outcome id a version's fills carry)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from common.errors import PoisonMessage
from common.payloads import MarketRef
from common.position_ids import is_v2_position_id


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


def item_version(item: Any) -> str:
    """A Gamma market's or event's protocol version: "v2", or "v1" (also when `version` is absent: Gamma's items
    from before Protocol V2 carry none, and its default selection, v1, includes them)."""
    return "v2" if isinstance(item, dict) and item.get("version") == "v2" else "v1"


def version_params(versions: Sequence[str]) -> list[tuple[str, str]]:
    """The selection as Gamma takes it: one repeated `version` key per version (`version=v1&version=v2`)."""
    return [("version", version) for version in versions]


def outcome_id_version(token_id: str) -> str:
    """The version of the market that owns an outcome id, read from the id alone: a Protocol V2 position id
    (ExchangeV3 fills, Combos included) belongs to a "v2" market, a CTF token id (v1 and CLOB v2 exchanges) to a
    "v1" one. Gamma's own rule is the same: a market's `version` names the kind of ids its fills carry."""
    return "v2" if is_v2_position_id(token_id) else "v1"


def outcome_refs(
    market_id: str, condition_id: str, question: str, outcomes: Sequence[Any], outcome_ids: Sequence[str]
) -> dict[str, MarketRef]:
    """Each outcome id of a market -> its MarketRef: id i is outcome i (`outcome_ids` chosen by the market's version:
    `positionIds` for "v2", `clobTokenIds` otherwise)."""
    return {
        token: MarketRef(
            market_id=market_id,
            condition_id=condition_id,
            question=question,
            outcome_index=i,
            outcome=str(outcomes[i]) if i < len(outcomes) else "",
        )
        for i, token in enumerate(outcome_ids)
    }
