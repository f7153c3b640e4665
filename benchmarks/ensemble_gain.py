"""Benchmark: what an ensemble of finished runs gains over its members, on validation data.

Trains (or reuses, when a finished run folder is there) `--seeds` seeds of a recipe and any
`--mixed` extra recipes, one run at a time in this process; then writes ensembles of the
first 3 and of all seeds, by every combination rule the task has, and a mixed ensemble of the
first seed with each extra recipe. Each row gives the ensemble's validation figure, its
members' mean and best, the gain over the mean, the inference time of the ensemble against
one member (evaluating the validation split: every member's forward pass and the rule, after
the members are loaded) and the members' training time.

    python benchmarks/ensemble_gain.py keyphrase --data ../shared/data/keyphrase/inspec \\
        --config src/nnlab/experiments/keyphrase/bilstm-crf-glove.toml \\
        --mixed src/nnlab/experiments/keyphrase/bilstm-cnn-crf-glove.toml --seeds 5 --out /tmp/eg
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from provenance import write_result
from rich.console import Console
from rich.table import Table

from nnlab import ensemble, experiment
from nnlab.host import reference_speeds
from nnlab.tasks.loading import open_run


def train(task: str, config: str, data: str, seed: int, out: Path, sets: list[str]
          ) -> tuple[Path, float]:
    """A finished run of `config` at `seed` (trained unless there) and its training seconds."""
    if not (out / "summary.json").is_file():
        cfg = experiment.resolve_config(task, None, config, data=data,
                                        sets=[f"train.seed={seed}", *sets])
        experiment.train_run(cfg, out, Console(quiet=True), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    return out, float(summary.get("train_seconds") or summary.get("seconds") or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task")
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True, help="the recipe whose seeds are combined")
    parser.add_argument("--mixed", action="append", default=[], help="other recipes, seed 0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--json")
    args = parser.parse_args()
    host = reference_speeds()
    root = Path(args.out)
    seeds = [train(args.task, args.config, args.data, s, root / f"seed{s}", args.set)
             for s in range(args.seeds)]
    mixed = [train(args.task, c, args.data, 0, root / Path(c).stem, args.set) for c in args.mixed]

    stem = Path(args.config).stem
    groups = [(f"{stem} x{n}", seeds[:n]) for n in sorted({min(3, args.seeds), args.seeds}) if n >= 2]
    groups += [(f"{stem} + {Path(c).stem}", [seeds[0], m]) for c, m in zip(args.mixed, mixed, strict=True)]
    rows = []
    for label, members in groups:
        experiment.evaluate_run(members[0][0])  # warm: data read, caches filled
        start = time.perf_counter()
        experiment.evaluate_run(members[0][0])  # one member alone, timed as the reference
        single = time.perf_counter() - start
        task = open_run(members[0][0], "cpu")[2]
        rules, metric = task.ensemble_rules, task.main_metric  # type: ignore[attr-defined]
        for rule in rules:
            folder = root / f"ens-{len(rows)}"
            shutil.rmtree(folder, ignore_errors=True)  # written again: this run's members and rule
            made = ensemble.create([str(p) for p, _ in members], folder, rule=rule)
            start = time.perf_counter()
            ensemble.load(folder).evaluate(details=False, alone=False)
            seconds = time.perf_counter() - start
            rows.append({"ensemble": label, "rule": rule, "members": len(members), "metric": metric,
                         "value": made[metric], "mean_member": made["mean_member"],
                         "best_member": max(m[metric] for m in made["members"]),
                         "member_values": [m[metric] for m in made["members"]],
                         "gain": made["gain"], "inference_seconds": round(seconds, 2),
                         "single_inference_seconds": round(single, 2),
                         "train_seconds": round(sum(t for _, t in members), 1)})

    table = Table(title=f"ensembles on {args.data} (validation); {host['cpu']}, fp32 matmul "
                        f"{host['matmul_fp32_gflops']} GFLOP/s")
    for col in ("ensemble", "rule", "val", "mean member", "best member", "gain",
                "inference vs one", "members' training s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["ensemble"], r["rule"], f"{r['value']:.4f}", f"{r['mean_member']:.4f}",
                      f"{r['best_member']:.4f}", f"{r['gain']:+.4f}",
                      f"{r['inference_seconds'] / max(r['single_inference_seconds'], 1e-9):.1f}x",
                      f"{r['train_seconds']:.0f}")
    Console().print(table)
    write_result(args.json or f"benchmarks/results/ensemble_{args.task}.json", host,
                 args=vars(args), host=host, rows=rows)


if __name__ == "__main__":
    main()
