"""Benchmark: ensemble selection over a library of finished runs, against every run combined
equally and against the best run, on validation data.

Every figure that chose something on validation flatters what it chose, so the table's main
columns are held-out: chosen on one half of the validation split, judged on the other, both
ways, averaged (`crossfit` in nnlab.ensemble_select). Beside them, the figures on the whole
split of the selected ensemble, of all runs equally, and of the best run. Inference: the
selected ensemble's evaluation of the validation split against one member's.

    python benchmarks/selection_gain.py --name inspec-minilm --steps 10 \\
        --runs /tmp/eg/seed0 /tmp/eg/seed1 ... --out /tmp/eg/selected
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from provenance import write_result
from rich.console import Console
from rich.table import Table

from nnlab import ensemble, experiment
from nnlab.host import reference_speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="the row's label")
    parser.add_argument("--runs", nargs="+", required=True, help="finished runs of one task")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rule")
    parser.add_argument("--out", required=True, help="scratch folder for the ensembles")
    parser.add_argument("--json", help="result file (default: selection_NAME.json)")
    args = parser.parse_args()
    host = reference_speeds()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)  # written again from these runs
    start = time.perf_counter()
    chosen = ensemble.create(args.runs, root / "selected", rule=args.rule, select=args.steps)
    select_seconds = time.perf_counter() - start
    equal = ensemble.create(args.runs, root / "equal", rule=args.rule)
    metric = next(k for k in ("span_f1", "pearson", "accuracy") if k in chosen)
    experiment.evaluate_run(args.runs[0])  # warm: data read, caches filled
    start = time.perf_counter()
    experiment.evaluate_run(args.runs[0])
    single = time.perf_counter() - start
    start = time.perf_counter()
    ensemble.load(root / "selected").evaluate(details=False, alone=False)
    inference = time.perf_counter() - start
    record = chosen["selection"]
    held = record["crossfit"]
    row = {"name": args.name, "metric": metric, "rule": chosen["rule"], "steps": args.steps,
           "candidates": len(record["candidates"]), "chosen": record["chosen"],
           "held_out_selected": held["selected"], "held_out_all_equal": held["all_equal"],
           "held_out_best_run": held["best_run"], "halves": held["halves"],
           "val_selected": chosen[metric], "val_all_equal": equal[metric],
           "val_best_run": max(c[metric] for c in record["candidates"]),
           "members": [{"run": m["run"], "weight": round(m["weight"], 4), metric: m[metric]}
                       for m in chosen["members"]],
           "candidate_values": {c["run"]: c[metric] for c in record["candidates"]},
           "curve": record["curve"], "select_seconds": round(select_seconds, 1),
           "inference_seconds": round(inference, 2), "single_inference_seconds": round(single, 2)}

    table = Table(title=f"ensemble selection, {args.name} (validation {metric}); {host['cpu']}, "
                        f"fp32 matmul {host['matmul_fp32_gflops']} GFLOP/s")
    for col in ("", "held out: selected", "all equal", "best run", "whole split: selected",
                "all equal", "best run", "chosen", "inference vs one"):
        table.add_column(col, justify="right")
    table.add_row(args.name, f"{row['held_out_selected']:.4f}", f"{row['held_out_all_equal']:.4f}",
                  f"{row['held_out_best_run']:.4f}", f"{row['val_selected']:.4f}",
                  f"{row['val_all_equal']:.4f}", f"{row['val_best_run']:.4f}",
                  f"{row['chosen']} of {row['candidates']}",
                  f"{inference / max(single, 1e-9):.1f}x")
    Console(width=150).print(table)
    for m in row["members"]:
        print(f"  {m['weight']:.2f}  {m['run']}  {m[metric]:.4f}")
    write_result(args.json or f"benchmarks/results/selection_{args.name}.json", host,
                 args=vars(args), host=host, row=row)


if __name__ == "__main__":
    main()
