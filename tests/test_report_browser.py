"""The report as a person sees it: rendered by headless Chromium (Debian's `chromium`, which
.ci/run installs), with no console error and no image that fails to load. A screenshot is
kept as a test artifact (test-artifacts/, or $NNLAB_TEST_ARTIFACTS) for a human to look at.

Skipped where Chromium or Playwright is missing, except under CI, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = "chromium" if CHROMIUM is None else "playwright" if sync_playwright is None else None
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is missing under CI (.ci/run installs it)")
        pytest.skip(f"{missing} not installed")
    return sync_playwright


@contextlib.contextmanager
def browser_page(viewport: dict[str, int]) -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Chromium, and the console errors, page errors and failed loads
    it collects."""
    sync_playwright = _need_browser()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport=viewport)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url[:80]}"))
            yield page, errors
        finally:
            browser.close()


def render(page_path: Path, screenshot: Path) -> dict:
    """Open the page; return console errors, broken images and layout facts."""
    with browser_page({"width": 1280, "height": 900}) as (page, errors):
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        facts = page.evaluate("""() => ({
            images: document.images.length,
            broken: Array.from(document.images)
                .filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
            tables: document.querySelectorAll('table').length,
            headline: document.querySelector('.best')?.textContent ?? '',
            overflow: document.documentElement.scrollWidth > window.innerWidth,
        })""")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return facts | {"errors": errors}


def test_report_renders_in_chromium(tmp_path, run_cli):
    _need_browser()
    runs = []
    for name, sets in (("cnn", []), ("cnn-dropout", [])):
        out = tmp_path / name
        r = run_cli("train", "image", "--model", name, "--data", "generated", "--epochs", "2",
                    "--set", "data.limit=600", *[x for s in sets for x in ("--set", s)],
                    "--out", out, "--quiet")
        assert r.code == 0, r.err
        runs.append(out)
    r = run_cli("report", *runs, "--out", tmp_path / "report", "--title", "browser check")
    assert r.code == 0, r.err
    artifacts = Path(os.environ.get("NNLAB_TEST_ARTIFACTS", REPO / "test-artifacts"))
    facts = render(tmp_path / "report" / "report.html", artifacts / "report.png")
    assert facts["errors"] == []
    assert facts["broken"] == []
    # overlay + per run: curves and confusion matrix
    assert facts["images"] == 5
    assert facts["tables"] >= 4  # variants, per-class accuracy, two layer tables
    assert facts["headline"].startswith("Best on validation accuracy:")
    assert not facts["overflow"]  # nothing wider than the window: tables scroll in their box
    assert (artifacts / "report.png").stat().st_size > 50_000
