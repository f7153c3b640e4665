"""Benchmark: `nnlab tune` on real data, one search per pruner, in one run on one host.

Each search runs `nnlab tune TASK --model M ... --trials N --workers W --pruner P` in a child
process; the table gives the best trial's validation metric (against `--recipe`, the model's
own recipe's figure), how many trials were pruned, the epochs trained in all (what pruning
saves) and the wall time.

    python benchmarks/tune_search.py similarity --model lstm --embeddings glove-6b-50d \\
        --data ../shared/data/sick --recipe 0.8684 --trials 24 --workers 2 --out /tmp/ts \\
        --space 'optim.lr=loguniform(3e-4,1e-2)' --space 'model.dropout=uniform(0,0.5)' \\
        --space 'data.batch_size=choice(16,32,64)' --space 'model.pooling=choice(max,mean)'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from provenance import write_result
from rich.console import Console
from rich.table import Table

from nnlab.host import reference_speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--embeddings")
    parser.add_argument("--space", action="append", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pruners", default="median,hyperband")
    parser.add_argument("--recipe", type=float, help="the model's recipe's validation figure")
    parser.add_argument("--out", required=True)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    host = reference_speeds()
    rows = []
    for pruner in args.pruners.split(","):
        out = Path(args.out) / pruner
        command = [sys.executable, "-m", "nnlab", "tune", args.task, "--model", args.model,
                   "--data", args.data, "--trials", str(args.trials), "--workers", str(args.workers),
                   "--threads", str(args.threads), "--pruner", pruner, "--out", str(out), "--quiet",
                   *(["--embeddings", args.embeddings] if args.embeddings else []),
                   *[x for s in args.space for x in ("--space", s)],
                   *[x for s in args.set for x in ("--set", s)]]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        trials = sorted((out / "trials").iterdir())
        summaries = [json.loads((t / "summary.json").read_text()) for t in trials
                     if (t / "summary.json").is_file()]
        metric = summaries[0]["main_metric"]
        finished = [s["val"][metric] for s in summaries if not s.get("pruned")]
        best = max(finished) if metric != "mse" else min(finished)
        best_toml = (out / "best.toml").read_text().splitlines()[0]
        rows.append({"pruner": pruner, "trials": len(summaries),
                     "pruned": sum(bool(s.get("pruned")) for s in summaries),
                     "epochs_trained": sum(s["epochs_run"] for s in summaries), "best": best,
                     "wall_seconds": round(wall, 1), "best_toml": best_toml})
    table = Table(title=f"nnlab tune {args.task} {args.model}: {args.trials} trials, {args.workers} "
                        f"workers x {args.threads} threads; {host['cpu']}, fp32 matmul "
                        f"{host['matmul_fp32_gflops']} GFLOP/s")
    for col in ("pruner", "best validation", "recipe", "pruned", "epochs trained", "wall min"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["pruner"], f"{r['best']:.4f}", f"{args.recipe:.4f}" if args.recipe else "-",
                      f"{r['pruned']}/{r['trials']}", str(r["epochs_trained"]),
                      f"{r['wall_seconds'] / 60:.1f}")
    Console().print(table)
    write_result(args.json or f"benchmarks/results/tune_{args.task}_{args.model}.json", host,
                 args=vars(args), host=host, rows=rows)


if __name__ == "__main__":
    main()
