"""The docs site's Results page (an MkDocs hook), generated at build time from `benchmarks/results/*.json`.

One row per result file: the benchmark that wrote it (the first line of its script's
docstring), the host it ran on, the commit that last wrote it, and its command. Files carry
this under one schema, `provenance` (benchmarks/provenance.py); older files, written before
that schema, are read where their own keys say the same (`host`, `machine`, `processor`,
`command`), and the commit is then the one that last changed the file in git.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _script(stem: str) -> Path | None:
    """The benchmark script that writes `stem`.json: the longest script name sharing its first
    word (`tune_keyphrase_bilstm_crf` -> tune_search.py)."""
    word = stem.split("_")[0]
    scripts = [p for p in (ROOT / "benchmarks").glob("*.py") if p.stem.split("_")[0] == word]
    return max(scripts, key=lambda p: len(p.stem), default=None)


def _summary(script: Path | None) -> str:
    if script is None:
        return ""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _host(data: dict[str, Any]) -> str:
    host = data.get("provenance", {}).get("host") or data.get("host") or data.get("host_measured")
    if isinstance(host, dict):
        cpu = host.get("cpu") or host.get("processor") or ""
        ref = host.get("matmul_fp32_gflops")
        return f"{cpu}" + (f" ({ref:.0f} GFLOP/s fp32 matmul)" if isinstance(ref, int | float) else "")
    if isinstance(host, str):
        return host
    return str(data.get("processor") or data.get("machine") or "not recorded")


def _commit(path: Path, data: dict[str, Any]) -> str:
    commit = data.get("provenance", {}).get("commit")
    if commit:
        return str(commit)[:10]
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h", "--", str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except OSError:
        out = ""
    return out or "uncommitted"


def _command(data: dict[str, Any]) -> str:
    command = data.get("provenance", {}).get("command") or data.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    return f"`{command}`" if command else "not recorded"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_page() -> str:
    lines = ["# Results", "",
             "Every figure nnlab states comes from a file in `benchmarks/results/`, written by a script in "
             "`benchmarks/`. This page is generated from those files when the site is built; each "
             "timing inside a file sits beside a same-run reference speed of its host.", "",
             "| file | benchmark | host | commit | command |", "|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            lines.append(f"| `{path.name}` | unreadable: {_cell(str(e))} | | | |")
            continue
        if not isinstance(data, dict):
            data = {"rows": data}
        lines.append(f"| `{path.name}` | {_cell(_summary(_script(path.stem)))} | {_cell(_host(data))} | "
                     f"{_commit(path, data)} | {_cell(_command(data))} |")
    return "\n".join(lines) + "\n"


def on_files(files: Any, config: Any) -> Any:
    files.append(File.generated(config, "results.md", content=results_page()))
    return files


if __name__ == "__main__":  # the page on stdout, without building the site
    print(results_page(), end="")
