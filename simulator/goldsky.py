"""Goldsky `orderbook-subgraph` stand-in: `orderFilledEvents`, `orderFilledEvent`, `_meta`.

Queries are parsed with graphql-core's parser; the selection is evaluated here (no graphql-core execution).
Semantics follow graph-node: `first` 0..1000 (default 100), `skip`, `orderBy` (ties broken by `id` in the same
direction), `orderDirection`, `where` with `_not/_gt/_gte/_lt/_lte/_in/_not_in` suffixes and equality, `block:
{number}`; BigInt fields are JSON strings, Bytes lowercase 0x hex. Errors: `{"errors": [{"message": …}]}`.
Only v1 fills (before the cutover block) exist here, as on the real, frozen subgraph.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

import numpy as np
import orjson
from graphql import GraphQLError
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
)
from graphql.utilities import value_from_ast_untyped

from simulator.constants import block_hash
from simulator.gql_parse import QueryCache
from simulator.world import World

MAX_FIRST = 1000
DEFAULT_FIRST = 100
ENTITY_FIELDS = (
    "id",
    "transactionHash",
    "timestamp",
    "orderHash",
    "maker",
    "taker",
    "makerAssetId",
    "takerAssetId",
    "makerAmountFilled",
    "takerAmountFilled",
    "fee",
)
NUMERIC_FIELDS = {
    "timestamp": "timestamp",
    "makerAmountFilled": "maker_amount",
    "takerAmountFilled": "taker_amount",
    "fee": "fee",
}
SUFFIXES = ("_not_in", "_not", "_gte", "_gt", "_lte", "_lt", "_in")
EMPTY_COLLECTIONS = ("ordersMatchedEvents", "orderbooks", "ordersMatchedGlobals", "marketDatas")
CHUNK = 4096


class QueryError(Exception):
    """A GraphQL error reported in the Graph's `{"errors": [{"message": ...}]}` shape."""


def split_filter(key: str) -> tuple[str, str]:
    for suffix in SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in ENTITY_FIELDS:
            return key[: -len(suffix)], suffix
    if key in ENTITY_FIELDS:
        return key, ""
    raise QueryError(f'Field "{key}" is not defined by type "OrderFilledEvent_filter".')


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "":
        return left == right
    if op == "_not":
        return left != right
    if op == "_gt":
        return left > right
    if op == "_gte":
        return left >= right
    if op == "_lt":
        return left < right
    if op == "_lte":
        return left <= right
    if op == "_in":
        return left in right
    return left not in right  # _not_in


class GoldskyService:
    def __init__(self, world: World) -> None:
        self.world = world
        self.queries = QueryCache()

    @cached_property
    def sorted_timestamps(self) -> np.ndarray:
        return self.world.timestamps(slice(0, self.world.v1_count))

    # --- entry point ---------------------------------------------------------------------------------------
    def execute(self, payload: Any) -> dict[str, Any]:
        """A GraphQL POST body -> response body (data or errors)."""
        try:
            if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
                raise QueryError("The query must be a JSON object with a `query` string")
            try:
                parsed = self.queries.parse(payload["query"])
            except GraphQLError as exc:
                raise QueryError(exc.message) from None
            operation, fragments = self._operation(parsed.document, payload.get("operationName"))
            variables = self._variables(operation, payload.get("variables") or {})
            data: dict[str, Any] = {}
            for node in self._fields(operation.selection_set.selections, fragments):
                key = node.alias.value if node.alias else node.name.value
                args = {a.name.value: parsed.value(a.value, variables) for a in node.arguments or ()}
                data[key] = self._root_field(node, args, fragments)
            return {"data": data}
        except QueryError as exc:
            return {"errors": [{"message": str(exc)}]}

    @staticmethod
    def _operation(document: DocumentNode, name: str | None) -> tuple[OperationDefinitionNode, dict[str, Any]]:
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        if name:
            operations = [op for op in operations if op.name and op.name.value == name]
        if len(operations) != 1:
            raise QueryError("Must provide exactly one operation (or a matching operationName)")
        if operations[0].operation.value != "query":
            raise QueryError(f"Operation type `{operations[0].operation.value}` is not supported")
        return operations[0], fragments

    @staticmethod
    def _variables(operation: OperationDefinitionNode, given: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if name in given:
                values[name] = given[name]
            elif definition.default_value is not None:
                values[name] = value_from_ast_untyped(definition.default_value)
        return values

    def _fields(self, selections: Any, fragments: dict[str, Any]) -> Iterator[FieldNode]:
        for node in selections:
            if isinstance(node, FieldNode):
                yield node
            elif isinstance(node, InlineFragmentNode):
                yield from self._fields(node.selection_set.selections, fragments)
            elif isinstance(node, FragmentSpreadNode):
                fragment = fragments.get(node.name.value)
                if fragment is None:
                    raise QueryError(f'Unknown fragment "{node.name.value}".')
                yield from self._fields(fragment.selection_set.selections, fragments)

    def _root_field(self, node: FieldNode, args: dict[str, Any], fragments: dict[str, Any]) -> Any:
        name = node.name.value
        if name == "__typename":
            return "Query"
        if name == "_meta":
            return self._meta(node, fragments)
        if name in EMPTY_COLLECTIONS:
            return []
        if name not in ("orderFilledEvents", "orderFilledEvent"):
            raise QueryError(f"Type `Query` has no field `{name}`")
        selected = self._selection(node, fragments)
        if name == "orderFilledEvent":
            if not isinstance(args.get("id"), str):
                raise QueryError("orderFilledEvent requires an `id: ID!` argument")
            found = self._find_id(args["id"])
            return None if found is None else orjson.loads(self.render_json(np.array([found]), selected))[0]
        return orjson.Fragment(self.render_json(self.select(args), selected))

    def _selection(self, node: FieldNode, fragments: dict[str, Any]) -> list[tuple[str, str]]:
        if node.selection_set is None:
            raise QueryError(f"Field `{node.name.value}` of type `OrderFilledEvent` must have a selection of subfields")
        selected = []
        for sub in self._fields(node.selection_set.selections, fragments):
            field = sub.name.value
            if field not in ENTITY_FIELDS and field != "__typename":
                raise QueryError(f"Type `OrderFilledEvent` has no field `{field}`")
            selected.append((sub.alias.value if sub.alias else field, field))
        return selected

    def _meta(self, node: FieldNode, fragments: dict[str, Any]) -> dict[str, Any]:
        head = self.world.head_block
        block = {
            "number": head,
            "hash": block_hash(self.world.seed, head),
            "timestamp": self.world.block_time(head),
            "__typename": "_Block_",
        }
        full = {
            "block": block,
            "deployment": "QmSimulatedOrderbookSubgraph0001",
            "hasIndexingErrors": False,
            "__typename": "_Meta_",
        }
        out: dict[str, Any] = {}
        for sub in self._fields(node.selection_set.selections if node.selection_set else (), fragments):
            key = sub.alias.value if sub.alias else sub.name.value
            value = full.get(sub.name.value)
            if sub.name.value == "block" and sub.selection_set is not None:
                value = {
                    (b.alias.value if b.alias else b.name.value): block.get(b.name.value)
                    for b in self._fields(sub.selection_set.selections, fragments)
                }
            out[key] = value
        return out

    # --- selection -----------------------------------------------------------------------------------------
    def select(self, args: dict[str, Any]) -> np.ndarray:
        first, skip = args.get("first", DEFAULT_FIRST), args.get("skip", 0)
        if not isinstance(first, int) or not 0 <= first <= MAX_FIRST:
            raise QueryError(f"The `first` argument must be between 0 and {MAX_FIRST}, but is {first}")
        if not isinstance(skip, int) or skip < 0:
            raise QueryError(f"The `skip` argument must be between 0 and 2147483647, but is {skip}")
        order_by = args.get("orderBy", "id")
        direction = args.get("orderDirection", "asc")
        if direction not in ("asc", "desc"):
            raise QueryError(f'Argument "orderDirection" has invalid value {direction}.')
        where = args.get("where") or {}
        if not isinstance(where, dict):
            raise QueryError('Argument "where" has invalid value: expected an object.')
        terms = self._terms(where)
        block = args.get("block")
        if isinstance(block, dict) and "number" in block:
            terms.append(("_block", "_lte", int(block["number"])))
        if order_by == "timestamp":
            order, lo, hi, rest = self._narrow_by_timestamp(terms)
        elif order_by == "id":
            order, lo, hi, rest = self._narrow_by_id(terms)
        elif order_by in ENTITY_FIELDS:
            raise QueryError(f"the simulator supports orderBy id or timestamp, not {order_by}")
        else:
            raise QueryError(f'Argument "orderBy" has invalid value {order_by}.')
        return self._collect(order, lo, hi, rest, skip, first, direction == "desc")

    def _terms(self, where: dict[str, Any]) -> list[tuple[str, str, Any]]:
        """`where` -> [(field, suffix, value)]; `and: [...]` flattens, `or: [...]` becomes ("_or", "", branches)."""
        if "or" in where and len(where) > 1:
            raise QueryError("Filter must by an object: cannot mix column filters with 'or' operator")
        terms: list[tuple[str, str, Any]] = []
        for key, value in where.items():
            if key in ("and", "or"):
                if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                    raise QueryError(f'Argument "where" has invalid value: `{key}` expects a list of filters.')
                branches = [self._terms(v) for v in value]
                if key == "and":
                    terms += [t for branch in branches for t in branch]
                else:
                    terms.append(("_or", "", branches))
            else:
                terms.append((*split_filter(key), self._coerce(key, value)))
        return terms

    def _timestamp_bounds(self, terms: list[Any]) -> tuple[int, int]:
        """Index range of `sorted_timestamps` allowed by the timestamp terms (and any `or` of them)."""
        ts = self.sorted_timestamps
        lo, hi = 0, len(ts)
        for field, op, value in terms:
            if field == "_or":
                bounds = [self._timestamp_bounds(branch) for branch in value]
                lo, hi = (
                    max(lo, min((b[0] for b in bounds), default=0)),
                    min(hi, max((b[1] for b in bounds), default=len(ts))),
                )
            elif field == "timestamp" and op in ("", "_gt", "_gte", "_lt", "_lte"):
                if op in ("", "_gte", "_gt"):
                    lo = max(lo, int(np.searchsorted(ts, value, "right" if op == "_gt" else "left")))
                if op in ("", "_lte", "_lt"):
                    hi = min(hi, int(np.searchsorted(ts, value, "left" if op == "_lt" else "right")))
        return lo, hi

    @staticmethod
    def _coerce(key: str, value: Any) -> Any:
        field, op = split_filter(key)
        if op in ("_in", "_not_in"):
            if not isinstance(value, list):
                raise QueryError(f'Argument "where" has invalid value: `{key}` expects a list.')
            return {GoldskyService._coerce(field, v) for v in value}
        if field in NUMERIC_FIELDS:
            try:
                return int(value)
            except (TypeError, ValueError):
                raise QueryError(f"Invalid BigInt value for `{key}`: {value!r}") from None
        if not isinstance(value, str):
            raise QueryError(f"Invalid value for `{key}`: expected a string, got {value!r}")
        return value.lower() if field not in ("makerAssetId", "takerAssetId") else value

    def _narrow_by_timestamp(self, terms: list[tuple[str, str, Any]]) -> tuple[np.ndarray, int, int, list[Any]]:
        ts = self.sorted_timestamps
        lo, hi = self._timestamp_bounds(terms)
        rest = [t for t in terms if not (t[0] == "timestamp" and t[1] in ("", "_gt", "_gte", "_lt", "_lte"))]
        order = self.world.goldsky_ts_order
        single_second = hi > lo and ts[lo] == ts[hi - 1]
        if single_second:  # ids are sorted inside one second: binary-search the id bounds too
            lo, hi, rest = self._narrow_ids(order, lo, hi, rest)
        return order, lo, max(lo, hi), rest

    def _narrow_by_id(self, terms: list[tuple[str, str, Any]]) -> tuple[np.ndarray, int, int, list[Any]]:
        order = self.world.goldsky_id_order
        lo, hi, rest = self._narrow_ids(order, 0, len(order), terms)
        return order, lo, hi, rest

    def _narrow_ids(self, order: np.ndarray, lo: int, hi: int, terms: list[Any]) -> tuple[int, int, list[Any]]:
        key: Callable[[int], str] = lambda i: self.world.fill_ids(order[i : i + 1])[0]  # noqa: E731
        rest = []
        for field, op, value in terms:
            if field != "id" or op not in ("", "_gt", "_gte", "_lt", "_lte"):
                rest.append((field, op, value))
                continue
            if op in ("", "_gte", "_gt"):
                lo = max(lo, (bisect_right if op == "_gt" else bisect_left)(range(len(order)), value, lo, hi, key=key))
            if op in ("", "_lte", "_lt"):
                hi = min(hi, (bisect_left if op == "_lt" else bisect_right)(range(len(order)), value, lo, hi, key=key))
        return lo, max(lo, hi), rest

    def _collect(
        self, order: np.ndarray, lo: int, hi: int, rest: list[Any], skip: int, first: int, descending: bool
    ) -> np.ndarray:
        if not rest:
            if descending:
                return order[max(lo, hi - skip - first) : max(lo, hi - skip)][::-1]
            return order[min(hi, lo + skip) : min(hi, lo + skip + first)]
        wanted, found = skip + first, []
        total = 0
        starts = range(hi, lo, -CHUNK) if descending else range(lo, hi, CHUNK)
        for start in starts:
            chunk = order[max(lo, start - CHUNK) : start][::-1] if descending else order[start : min(hi, start + CHUNK)]
            chunk = chunk[self._mask(chunk, rest)]
            found.append(chunk)
            total += len(chunk)
            if total >= wanted:
                break
        matched = np.concatenate(found) if found else np.zeros(0, np.int64)
        return matched[skip:wanted]

    def _mask(self, idx: np.ndarray, terms: list[Any]) -> np.ndarray:
        mask = np.ones(len(idx), bool)
        for field, op, value in terms:
            if field == "_or":
                branches = [self._mask(idx, branch) for branch in value]
                mask &= np.logical_or.reduce(branches) if branches else False
                continue
            if field == "_block":
                mask &= self.world.col("block")[idx] <= value
                continue
            if field in NUMERIC_FIELDS:
                column = NUMERIC_FIELDS[field]
                values = self.world.timestamps(idx) if column == "timestamp" else self.world.col(column)[idx]
                column_values = values.tolist()
            else:
                column_values = self._string_column(field, idx)
            mask &= np.fromiter((_compare(op, v, value) for v in column_values), bool, len(idx))
        return mask

    def _string_column(self, field: str, idx: np.ndarray) -> list[str]:
        w = self.world
        if field == "id":
            return w.fill_ids(idx)
        if field == "transactionHash":
            return w.tx_hashes(idx)
        if field == "orderHash":
            return w.order_hashes(idx)
        if field in ("maker", "taker"):
            return w.address_hex(w.col(field)[idx])
        makers, takers = w.asset_ids(idx)
        return makers if field == "makerAssetId" else takers

    def _find_id(self, fill_id: str) -> int | None:
        order = self.world.goldsky_id_order
        fill_id = fill_id.lower()
        lo, hi, _ = self._narrow_ids(order, 0, len(order), [("id", "", fill_id)])
        return int(order[lo]) if hi > lo else None

    # --- rendering -----------------------------------------------------------------------------------------
    def render_json(self, idx: np.ndarray, selected: list[tuple[str, str]]) -> bytes:
        """Entities as a JSON array, built as text: every selected value is a plain ASCII JSON string."""
        w = self.world
        columns: dict[str, list[Any]] = {}
        for _, field in selected:
            if field in columns:
                continue
            if field == "__typename":
                columns[field] = ["OrderFilledEvent"] * len(idx)
            elif field == "timestamp":
                columns[field] = w.timestamps(idx).tolist()
            elif field in NUMERIC_FIELDS:
                columns[field] = w.col(NUMERIC_FIELDS[field])[idx].tolist()
            elif field in ("makerAssetId", "takerAssetId"):
                columns["makerAssetId"], columns["takerAssetId"] = w.asset_ids(idx)
            else:
                columns[field] = self._string_column(field, idx)
        if not selected:
            return ("[" + ",".join(["{}"] * len(idx)) + "]").encode()
        template = "{" + ",".join(f'"{alias}":"%s"' for alias, _ in selected) + "}"
        rows = zip(*(columns[field] for _, field in selected), strict=True)
        return ("[" + ",".join([template % row for row in rows]) + "]").encode()
