"""Every relative link in the README and docs/ resolves: the file exists inside the repository, and an anchor
names one of its headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    found, text = set(), re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT) or not file.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading '{anchor}' in {file.relative_to(ROOT)}")
    assert broken == []


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n[fine](#a-page) [gone](missing.md) [nowhere](#no-such-heading)\n")
    assert links(page) == ["#a-page", "missing.md", "#no-such-heading"]
    assert anchors(page) == {"a-page"}


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_page_of_several_sections_opens_with_their_index(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    if len(sections) < 2:
        return
    index = re.search(r"^Contents: (.+?)\n\n", text, flags=re.M | re.S)  # a paragraph
    assert index and index.start() < text.index("\n## "), "a `Contents:` line before the first section"
    listed = set(re.findall(r"\]\(#([^)]+)\)", index.group(1)))
    assert {s for s in anchors(page) if s in listed} == listed
    assert len(listed) >= len(sections) - 1  # every section (one may be left out, e.g. a closing note)
