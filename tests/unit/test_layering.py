"""The import rule of docs/ARCHITECTURE.md, checked on the real tree: every import, function-level ones included.

`common/` imports nothing of the project; a service package (`ingesters/`, `processors/`, `dashboard/`) imports
only `common` and itself; `simulator/` (a stand-in for Polymarket, usable alone) imports only itself; `pipeline/`,
`tests/` and `bench/` may import anything, except that the ops commands (`pipeline/ops/`) do not import `dashboard`:
what they share with it (the read model) lives in `common/status/`.

And one room per concern: SQL names the four tables only through `common/tables.py` (migrations and tests aside),
as Redis names go through `common/keys.py`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from common import tables

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = frozenset(
    {"common", "ingesters", "processors", "dashboard", "simulator", "pipeline", "tests", "bench"}
)
# What each restricted package may import from the project; the packages not listed may import anything.
ALLOWED = {
    "common": frozenset({"common"}),
    "ingesters": frozenset({"common", "ingesters"}),
    "processors": frozenset({"common", "processors"}),
    "dashboard": frozenset({"common", "dashboard"}),
    "simulator": frozenset({"simulator"}),
}
# Directories that may import anything of the project but these.
FORBIDDEN = {
    "pipeline/ops": frozenset({"dashboard"}),
}


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in `source`; a relative one stays inside its own package."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def layering_violations(root: Path) -> list[str]:
    """One line per import that breaks the rule, naming the file, the import and the rule."""
    problems = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path.read_text()):
                imported = module.split(".")[0]
                if imported in PROJECT_PACKAGES and imported not in allowed:
                    rule = f"{package}/ may import only {', '.join(sorted(allowed))} of the project"
                    problems.append(f"{path.relative_to(root)}:{line}: `{module}`: {rule}")
    for directory, forbidden in FORBIDDEN.items():
        for path in sorted((root / directory).rglob("*.py")):
            for line, module in imported_modules(path.read_text()):
                if module.split(".")[0] in forbidden:
                    rule = f"{directory}/ may not import {', '.join(sorted(forbidden))}"
                    problems.append(f"{path.relative_to(root)}:{line}: `{module}`: {rule}")
    return problems


# Where SQL is built: every package but the tests (which may spell a table out to check it) and the simulator.
SQL_PACKAGES = ("common", "ingesters", "processors", "dashboard", "pipeline", "bench")
TABLE_MODULE = Path("common/tables.py")
# The first queries shown to users (docs/queries.md), written as a user types them: `polymarket.trades`.
USER_QUERIES = Path("pipeline/harness/showcase.py")
# A table named right after the SQL word that takes one, bare or after a database (`db.trades`, `{database}.trades`).
TABLE_IN_SQL = re.compile(
    r"\b(?:FROM|JOIN|INTO|TABLE|UPDATE|DESCRIBE|OPTIMIZE TABLE|EXISTS)\s+(?:\{[^}]*\}\.|\w+\.)?"
    rf"({'|'.join(tables.ALL)})\b"
)


def string_literals(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal and f-string part, docstrings aside (they describe, not query)."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    f_string_parts = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    not_alone = docstrings | f_string_parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in not_alone:
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):  # the literal parts of an f-string, with "{}" for each field
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def table_name_literals(root: Path) -> list[str]:
    """One line per string literal outside common/tables.py that names one of the four tables in SQL."""
    problems = []
    for package in SQL_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if path.relative_to(root) in (TABLE_MODULE, USER_QUERIES):
                continue
            for line, text in string_literals(path.read_text()):
                if match := TABLE_IN_SQL.search(text):
                    problems.append(
                        f"{path.relative_to(root)}:{line}: names table `{match.group(1)}` in SQL: "
                        f"use common.tables ({', '.join(name.upper() for name in tables.ALL)})"
                    )
    return problems


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)


def test_the_tree_follows_the_import_rule() -> None:
    assert all(any((ROOT / package).rglob("*.py")) for package in ALLOWED)  # the real tree, not an empty one
    problems = layering_violations(ROOT)
    assert not problems, "imports across the layering rule:\n" + "\n".join(problems)


def test_sql_names_the_tables_through_common_tables() -> None:
    problems = table_name_literals(ROOT)
    assert not problems, "table names spelled out in SQL:\n" + "\n".join(problems)


def test_the_table_check_finds_literals_and_f_strings(tmp_path: Path) -> None:
    files = {
        "common/tables.py": 'TRADES = "trades"\nSQL = "SELECT count() FROM trades"\n',
        "pipeline/ops/fine.py": (
            '"""Reads FROM trades, as a docstring may say."""\nfrom common import tables\n'
            'SQL = f"SELECT count() FROM {db}.{tables.TRADES}"\nWORDS = "markets and events"\n'
        ),
        "pipeline/ops/literal.py": 'SQL = "SELECT id FROM order_filled_events WHERE id = 1"\n',
        "dashboard/fstring.py": 'def q(db):\n    return f"SELECT max(timestamp) FROM {db}.trades"\n',
        "bench/insert.py": 'SQL = "INSERT INTO markets (id) VALUES"\n',
    }
    write_tree(tmp_path, files)

    assert [problem.split(": use")[0] for problem in table_name_literals(tmp_path)] == [
        "dashboard/fstring.py:2: names table `trades` in SQL",
        "pipeline/ops/literal.py:1: names table `order_filled_events` in SQL",
        "bench/insert.py:1: names table `markets` in SQL",
    ]


def test_the_checker_finds_module_and_function_level_violations(tmp_path: Path) -> None:
    files = {
        "common/fine.py": "import orjson\nfrom common import keys\nfrom . import errors\n",
        "common/late.py": "def f():\n    from ingesters.gamma import GammaClient\n",
        "dashboard/fine.py": "from common import keys\nfrom dashboard import models\n",
        "dashboard/reaches.py": "import processors.rows\n",
        "simulator/uses_common.py": "from common.keys import STREAM_DLQ\n",
        "pipeline/anything.py": "import ingesters, processors, dashboard, simulator\n",
        "pipeline/ops/status.py": "from common.status import snapshot\nfrom dashboard.app import redact\n",
    }
    write_tree(tmp_path, files)

    assert layering_violations(tmp_path) == [
        "common/late.py:2: `ingesters.gamma`: common/ may import only common of the project",
        "dashboard/reaches.py:1: `processors.rows`: dashboard/ may import only common, dashboard of the project",
        "simulator/uses_common.py:1: `common.keys`: simulator/ may import only simulator of the project",
        "pipeline/ops/status.py:2: `dashboard.app`: pipeline/ops/ may not import dashboard",
    ]
