"""Benchmark: a text study at `--budget cpu` over 3 seeds, timed, with its claims measured.

Runs `nnlab reproduce STUDY --budget cpu --seeds 0,1,2` in a child process (or reads a
finished study folder with --summarize), then prints one row per variant (mean ± sd of the
main validation metric, epochs, seconds) and each claim's measured difference, and writes
benchmarks/results/STUDY_cpu_study.json with the host's reference speeds taken just before
the study. Target (issue 18): each text study <= 45 minutes on 2 cores.

    python benchmarks/text_studies.py similarity --data ../shared/data/sick --out /tmp/sim
    python benchmarks/text_studies.py keyphrase --data ../shared/data/keyphrase/inspec --out /tmp/kp
    python benchmarks/text_studies.py similarity --data ../shared/data/sick --out /tmp/sim \\
        --summarize --wall-seconds 2467
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nnlab import claims, report, studies, tasks
from nnlab.host import reference_speeds


def read_runs(folder: Path, main_metric: str) -> list[dict]:
    """Each finished run of the study folder (baselines included), as the report reads it."""
    rows = []
    for path in sorted((folder / "runs").iterdir()):
        if not (path / "summary.json").is_file():
            continue
        run = report.read_run(path)
        rows.append({"variant": run.variant.get("variant", run.name), "seed": run.variant.get("seed"),
                     main_metric: run.summary["val"][main_metric],
                     "best_epoch": run.summary.get("best_epoch"),
                     "epochs_run": run.summary.get("epochs_run", 0),
                     "train_seconds": round(run.summary.get("train_seconds", 0.0), 1),
                     "lr_cut_after_epochs": claims.lr_cuts(run.history)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=["similarity", "keyphrase"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="the study folder")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--summarize", action="store_true", help="read a finished study folder")
    parser.add_argument("--wall-seconds", type=float, help="with --summarize: the study's measured time")
    parser.add_argument("--peak-rss-mb", type=float, help="with --summarize: the study's peak RSS")
    parser.add_argument("--json", help="default: benchmarks/results/STUDY_cpu_study.json")
    args = parser.parse_args()
    study = studies.load_study(args.study)
    task = tasks.get(study.task)
    command = ["nnlab", "reproduce", args.study, "--budget", "cpu", "--seeds", args.seeds,
               "--data", args.data, "--out", args.out, "--quiet"]
    host = reference_speeds()
    peak_rss_mb = None
    if args.summarize:
        wall, peak_rss_mb = args.wall_seconds, args.peak_rss_mb
    else:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nnlab", *command[1:]], check=True)
        wall = time.perf_counter() - start
        peak_rss_mb = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    runs = read_runs(Path(args.out), task.main_metric)
    scores = claims.scores_by_variant([(r["variant"], r["seed"], r[task.main_metric])
                                       for r in runs if r["seed"] is not None])
    effects = [claims.measure(c, scores, task.higher_is_better) for c in study.claims]
    table = Table(title=f"{args.study} at budget cpu, seeds {args.seeds}: {host['cpu']}, "
                        f"{host['threads']} threads, fp32 matmul {host['matmul_fp32_gflops']} GFLOP/s; "
                        f"study wall time {wall / 60:.1f} min")
    for col in ("variant", f"val {task.main_metric} mean ± sd", "best epochs", "train s (mean)"):
        table.add_column(col, justify="right")
    for variant, _, mean_sd, _, _ in claims.seed_rows(scores):
        mine = [r for r in runs if r["variant"] == variant]
        table.add_row(variant, mean_sd, ", ".join(str(r["best_epoch"]) for r in mine),
                      f"{statistics.fmean(r['train_seconds'] for r in mine):.0f}")
    console = Console()
    console.print(table)
    lines = [e.line(task.main_metric) for e in effects]
    for line in lines:
        console.print("- " + line, markup=False)
    out = Path(args.json or f"benchmarks/results/{args.study}_cpu_study.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(command), "data": args.data, "host": host,
                               "host_measured": "after the study" if args.summarize else "before the study",
                               "wall_seconds": round(wall) if wall else None,
                               "peak_rss_mb": peak_rss_mb, "claims": lines, "runs": runs},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
