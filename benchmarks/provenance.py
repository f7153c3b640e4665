"""Where a result came from, under one schema for every file in `benchmarks/results/`:
the commit (and whether the tree had changes), the command, the host with its same-run
reference speeds, and when. The docs' Results page (benchmarks/results_page.py) reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except OSError:
        return ""


def provenance(host: dict[str, Any]) -> dict[str, Any]:
    """`host`: nnlab.host.reference_speeds(), measured in the same run as the figures."""
    commit = _git("rev-parse", "HEAD") or None
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "src"))
    return {"commit": commit, "changes_in_src": dirty, "command": ["python", *sys.argv],
            "host": host, "when": datetime.now(UTC).isoformat(timespec="seconds")}


def write_result(path: str | Path, speeds: dict[str, Any], /, **fields: Any) -> None:
    """A benchmark's result file: its provenance (`speeds`: the host's reference speeds) first,
    then `fields`; says where it went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": provenance(speeds), **fields}, indent=1) + "\n")
    print(f"wrote {path}")
