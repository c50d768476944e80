"""Parse each GraphQL query *shape* once: string literals are lifted out, so cursor queries that differ only in
`"…"` values (`timestamp_gt: "1696000000"`) share one parse. Falls back to a plain parse when unsure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, parse
from graphql.language import (
    BooleanValueNode,
    DocumentNode,
    EnumValueNode,
    FloatValueNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    Visitor,
    visit,
)

STRING_LITERAL = re.compile(r'"(?:[^"\\\n]|\\.)*"')
CACHE_SIZE = 256


class _Strings(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[StringValueNode] = []

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        self.nodes.append(node)


@dataclass(frozen=True)
class ParsedQuery:
    document: DocumentNode
    strings: dict[int, str] = field(default_factory=dict)  # id(StringValueNode) -> this query's literal

    def value(self, node: ValueNode, variables: dict[str, Any]) -> Any:
        """A literal argument value (untyped), with this query's strings and the request's variables."""
        if isinstance(node, VariableNode):
            return variables.get(node.name.value)
        if isinstance(node, StringValueNode):
            return self.strings.get(id(node), node.value)
        if isinstance(node, IntValueNode):
            return int(node.value)
        if isinstance(node, FloatValueNode):
            return float(node.value)
        if isinstance(node, BooleanValueNode):
            return node.value
        if isinstance(node, EnumValueNode):
            return node.value
        if isinstance(node, ListValueNode):
            return [self.value(v, variables) for v in node.values]
        if isinstance(node, ObjectValueNode):
            return {f.name.value: self.value(f.value, variables) for f in node.fields}
        return None  # NullValueNode


class QueryCache:
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[DocumentNode, list[StringValueNode]]] = {}

    def parse(self, query: str) -> ParsedQuery:
        """Raises GraphQLError with the message for the query as sent."""
        literals = STRING_LITERAL.findall(query)
        if '"""' in query or "#" in query:
            return ParsedQuery(parse(query, no_location=True))
        template = STRING_LITERAL.sub('""', query)
        shape = self._shapes.get(template)
        if shape is None:
            try:
                document = parse(template, no_location=True)
            except GraphQLError:
                return ParsedQuery(parse(query, no_location=True))
            collector = _Strings()
            visit(document, collector)
            if len(self._shapes) >= CACHE_SIZE:
                self._shapes.clear()
            shape = self._shapes[template] = (document, collector.nodes)
        document, nodes = shape
        try:
            values = [json.loads(literal) for literal in literals]
        except ValueError:
            values = []
        if len(values) != len(nodes) or len(literals) != len(nodes):
            return ParsedQuery(parse(query, no_location=True))
        return ParsedQuery(document, {id(node): value for node, value in zip(nodes, values, strict=True)})
