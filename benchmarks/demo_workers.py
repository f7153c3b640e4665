"""Benchmark: `nnlab demo` one run at a time (`--workers 1`) against its default on this host
(one Ray worker per core, one thread each), on the generated data, each with an empty cache.

Both runs happen one after the other in this script (never side by side); the table gives
their wall times, the ratio, and whether every run of the three studies reached the same
validation figure (they must: the same seeds, the same data).

    python benchmarks/demo_workers.py --out /tmp/demo-workers
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from provenance import write_result
from rich.console import Console
from rich.table import Table

from nnlab.host import reference_speeds, usable_cores


def figures(root: Path) -> dict[str, float]:
    """Every run's validation figure below a demo folder, by its path."""
    found = {}
    for summary in sorted(root.rglob("summary.json")):
        data = json.loads(summary.read_text())
        metric = data.get("main_metric")
        if metric and isinstance(data.get("val"), dict) and metric in data["val"]:
            found[str(summary.parent.relative_to(root))] = data["val"][metric]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--json", default="benchmarks/results/demo_workers.json")
    args = parser.parse_args()
    host = reference_speeds()
    walls, found = {}, {}
    for label, workers in (("one at a time", "1"), ("default", "0")):
        out = Path(args.out) / label.replace(" ", "-")
        env = dict(os.environ, NNLAB_CACHE_DIR=str(out / "cache"))
        env.pop("NNLAB_DATA", None)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nnlab", "demo", "--data", "generated", "--offline",
                        "--workers", workers, "--out", str(out / "demo")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        walls[label] = time.perf_counter() - start
        found[label] = figures(out / "demo")
    a, b = found["one at a time"], found["default"]
    diffs = {k: abs(a[k] - b[k]) for k in a if k in b}
    ratio = walls["default"] / walls["one at a time"]
    table = Table(title=f"nnlab demo on {host['cpu']} ({usable_cores()} cores, "
                        f"{host['matmul_fp32_gflops']} GFLOP/s fp32 matmul)")
    for col in ("runs", "wall (min)", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("one at a time", f"{walls['one at a time'] / 60:.1f}", "1.00")
    table.add_row(f"default ({usable_cores()} workers)", f"{walls['default'] / 60:.1f}", f"{ratio:.2f}")
    Console().print(table)
    print(f"runs compared: {len(diffs)} of {len(a)}; largest difference in a validation figure: "
          f"{max(diffs.values(), default=0):.2g}")
    write_result(args.json, host, cores=usable_cores(),
                 wall_seconds={k: round(v, 1) for k, v in walls.items()}, ratio=round(ratio, 3),
                 runs=len(a), runs_compared=len(diffs),
                 max_abs_metric_diff=max(diffs.values(), default=0), figures=found)


if __name__ == "__main__":
    main()
