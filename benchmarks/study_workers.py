"""Benchmark: one study on Ray workers against the serial path, on the same host, in one run.

Runs `nnlab reproduce STUDY --budget B --seeds S` twice in child processes: serially (one
process, torch's threads = the cores) and with `--workers W --threads T`; prints the wall-time
ratio (target, issue 27: <= 0.80 for 2 workers of 1 thread on 2 cores; in general <= 1.15/N),
each run's validation metric in both, and whether every claim comes out the same.

    python benchmarks/study_workers.py --data ../shared/data/sick --out /tmp/sw
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from provenance import write_result
from rich.console import Console
from rich.table import Table

from nnlab import claims, report, studies, tasks
from nnlab.host import reference_speeds


def runs_of(folder: Path, metric: str) -> dict[str, float]:
    out = {}
    for path in sorted((folder / "runs").iterdir()):
        if (path / "summary.json").is_file():
            run = report.read_run(path)
            out[path.name] = run.summary["val"][metric]
    return out


def claim_lines(folder: Path, study: studies.Study, metric: str, higher: bool) -> list[str]:
    rows = []
    for path in sorted((folder / "runs").iterdir()):
        run = report.read_run(path)
        if run.variant.get("seed") is not None and (path / "summary.json").is_file():
            rows.append((run.variant["variant"], run.variant["seed"], run.summary["val"][metric]))
    scores = claims.scores_by_variant(rows)
    return [claims.measure(c, scores, higher).line(metric) for c in study.claims]


def without_extras(name: str, out: Path) -> str:
    """A copy of the study without the variants that need an extra, beside the shipped
    configs it names (a study's config paths are relative to its experiments folder)."""
    import tomllib

    import tomli_w

    source = studies.find_study(name)
    raw = tomllib.loads(source.read_text())
    raw["variants"] = [v for v in raw["variants"] if not v.get("requires")]
    root = out / "experiments"
    (root / "studies").mkdir(parents=True, exist_ok=True)
    for folder in source.parent.parent.iterdir():
        if folder.is_dir() and folder.name != "studies" and not (root / folder.name).exists():
            (root / folder.name).symlink_to(folder.resolve())
    path = root / "studies" / f"{source.stem}.toml"
    path.write_text(tomli_w.dumps(raw))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="similarity")
    parser.add_argument("--data", required=True)
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="a folder for the two study folders")
    parser.add_argument("--json", default="benchmarks/results/study_workers.json")
    parser.add_argument("--with-extras", action="store_true",
                        help="keep the variants that need an extra (MiniLM: 30 min a seed on 2 cores)")
    args = parser.parse_args()
    if not args.with_extras:
        args.study = without_extras(args.study, Path(args.out))
    study = studies.load_study(args.study)
    task = tasks.get(study.task)
    host = reference_speeds()
    common = ["reproduce", args.study, "--budget", args.budget, "--seeds", args.seeds, "--data", args.data,
              "--quiet"]
    walls = {}
    spread_args = ["--workers", str(args.workers), "--threads", str(args.threads)]
    for name, extra in (("serial", []), ("ray", spread_args)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nnlab", *common, "--out", str(Path(args.out) / name), *extra],
                       check=True)
        walls[name] = time.perf_counter() - start
    metric = task.main_metric
    serial, spread = runs_of(Path(args.out) / "serial", metric), runs_of(Path(args.out) / "ray", metric)
    diffs = {k: abs(serial[k] - spread[k]) for k in serial if k in spread}
    lines = {n: claim_lines(Path(args.out) / n, study, metric, task.higher_is_better) for n in walls}
    ratio = walls["ray"] / walls["serial"]
    table = Table(title=f"{args.study} --budget {args.budget} --seeds {args.seeds}: {host['cpu']}, "
                        f"fp32 matmul {host['matmul_fp32_gflops']} GFLOP/s")
    for col in ("path", "wall min", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("serial (1 process)", f"{walls['serial'] / 60:.1f}", "1.00")
    table.add_row(f"Ray: {args.workers} workers x {args.threads} threads", f"{walls['ray'] / 60:.1f}",
                  f"{ratio:.2f}")
    console = Console()
    console.print(table)
    console.print(f"runs: {len(diffs)}; largest |difference| of validation {metric}: "
                  f"{max(diffs.values()):.2e}")
    same = lines["serial"] == lines["ray"]
    console.print(f"claims the same: {same}")
    for n in walls:
        for line in lines[n]:
            console.print(f"  {n}: {line}", markup=False)
    write_result(
        args.json, host, study=args.study, budget=args.budget, seeds=args.seeds, data=args.data,
        workers=args.workers, threads=args.threads, host=host,
        wall_seconds={k: round(v, 1) for k, v in walls.items()}, ratio=round(ratio, 3),
        target_ratio=round(1.15 / args.workers, 3), max_abs_metric_diff=max(diffs.values()),
        claims=lines, claims_same=same, serial=serial, ray=spread)


if __name__ == "__main__":
    main()
