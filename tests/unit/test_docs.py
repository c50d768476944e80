"""The documents stay true to the code: the configuration page lists every setting as the classes define it, every
citation points inside the repository, and the README stays a short page quoting the bench's targets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pipeline import config_docs
from pipeline.harness import targets

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = f"run `{config_docs.COMMAND}` (or `make docs`) and commit docs/configuration.md"
# What a citation of a document outside the repository looks like (the product brief, the research notes); the
# brackets keep this file from matching itself.
OUTSIDE_CITATION = re.compile(r"DESI[G]N|referenc[e] §|\.\./share[d]")


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def test_configuration_doc_names_every_setting() -> None:
    documented = config_docs.documented_names((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8"))
    missing = sorted(config_docs.all_names() - documented)
    stale = sorted(documented - config_docs.all_names())
    assert not missing, f"settings missing from docs/configuration.md: {', '.join(missing)}; {REGENERATE}"
    assert not stale, f"docs/configuration.md names settings no class has: {', '.join(stale)}; {REGENERATE}"


def test_configuration_doc_is_generated_from_the_classes() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == config_docs.render(), f"docs/configuration.md differs from the settings classes: {REGENERATE}"


def test_every_setting_says_what_it_means() -> None:
    unexplained = [
        env
        for model in config_docs.settings_classes()
        for name in model.model_fields
        if not (config_docs.field_comments(model).get(name)
                or config_docs.MEANINGS.get(env := config_docs.env_name(model, name)))
    ]
    assert not unexplained, (
        f"settings without a meaning: {', '.join(unexplained)}: add a comment on the field's line (or just above it) "
        f"in its settings class, then {REGENERATE}"
    )


def test_settings_classes_are_found_in_every_package() -> None:
    modules = config_docs.settings_modules()
    for expected in ("common.config", "ingesters.chain_ingester", "processors.clickhouse_writer", "dashboard.settings"):
        assert expected in modules


def test_no_citation_points_outside_the_repository() -> None:
    found = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files cite nothing
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_CITATION.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, (
        "citations of documents outside the repository (cite docs/CONTRACT.md §N for the contract, docs/upstream.md "
        "§N for upstream facts):\n" + "\n".join(found)
    )


def test_readme_is_a_short_page_quoting_the_targets() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 12_000, "README.md over 12 KB: move the detail to docs/"
    for quoted in (
        f"≥ {targets.FILLS_PER_S:,} fills/s",
        f"≤ {targets.CPU_US_PER_FILL} CPU-µs per fill",
        f"p99 ≤ {targets.LATENCY_P99_S} s",
        f"≤ {targets.WRITER_RSS_MB} MB",
    ):
        assert quoted in readme, f"README.md does not quote the target {quoted!r} of pipeline/harness/targets.py"


def test_docs_links_resolve() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://")) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
