"""The import rule of docs/ARCHITECTURE.md, checked on the real tree: every import, function-level ones included.

`common/` imports nothing of the project; a service package (`ingesters/`, `processors/`, `dashboard/`) imports
only `common` and itself; `simulator/` (a stand-in for Polymarket, usable alone) imports only itself; `pipeline/`,
`tests/` and `bench/` may import anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

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
    return problems


def test_the_tree_follows_the_import_rule() -> None:
    assert all(any((ROOT / package).rglob("*.py")) for package in ALLOWED)  # the real tree, not an empty one
    problems = layering_violations(ROOT)
    assert not problems, "imports across the layering rule:\n" + "\n".join(problems)


def test_the_checker_finds_module_and_function_level_violations(tmp_path: Path) -> None:
    files = {
        "common/fine.py": "import orjson\nfrom common import keys\nfrom . import errors\n",
        "common/late.py": "def f():\n    from ingesters.gamma import GammaClient\n",
        "dashboard/fine.py": "from common import keys\nfrom dashboard import models\n",
        "dashboard/reaches.py": "import processors.rows\n",
        "simulator/uses_common.py": "from common.keys import STREAM_DLQ\n",
        "pipeline/anything.py": "import ingesters, processors, dashboard, simulator\n",
    }
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)

    assert layering_violations(tmp_path) == [
        "common/late.py:2: `ingesters.gamma`: common/ may import only common of the project",
        "dashboard/reaches.py:1: `processors.rows`: dashboard/ may import only common, dashboard of the project",
        "simulator/uses_common.py:1: `common.keys`: simulator/ may import only simulator of the project",
    ]
