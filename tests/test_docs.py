"""The README and docs/ hold together: every relative link resolves, and every test they cite exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
CITED_TEST = re.compile(r"(tests/test_\w+\.py)::(test_\w+)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in page.read_text().splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", "")).replace(" ", "-"))
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_is_short_and_indexes_every_doc():
    readme = ROOT / "README.md"
    assert readme.stat().st_size <= 12 * 1024
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme)}
    assert {p.resolve() for p in PAGES[1:]} <= linked


def test_every_test_the_docs_cite_exists():
    missing = []
    for page in PAGES:
        for file, name in CITED_TEST.findall(page.read_text()):
            path = ROOT / file
            if not path.exists() or not re.search(rf"^def {name}\(", path.read_text(), re.M):
                missing.append(f"{page.relative_to(ROOT)}: {file}::{name}")
    assert not missing, missing
