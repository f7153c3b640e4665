"""The front door stays short and its links stay true (the site itself is built with
`mkdocs build --strict` in `make test`, which checks the links between its pages)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_docs_page_is_in_the_site_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert [p for p in pages if p not in nav] == []
    assert "results.md" in nav  # generated at build time from benchmarks/results/*.json


def test_the_results_page_lists_every_result_file():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_page", ROOT / "benchmarks" / "results_page.py")
    if spec is None or spec.loader is None or importlib.util.find_spec("mkdocs") is None:
        import pytest

        pytest.skip("mkdocs (the docs extra) is not installed")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = module.results_page()
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        assert f"`{path.name}`" in page
