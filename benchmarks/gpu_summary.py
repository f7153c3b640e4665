"""Summarise the image runs of a GPU call (benchmarks/gpu_check.sh, gpu_recipes.sh): one row per
run with its overrides, validation accuracy per epoch, the final (test-time-augmented where
the recipe has it) figure and its device, as a table and benchmarks/results/gpu_image_runs.json.

    python benchmarks/gpu_summary.py RUNS_DIR [RUNS_DIR ...]   # folders of unpacked runs.tgz

The runs shared the GPU in parallel lanes, so their seconds are not throughput figures; the
accuracy is what they are for: the same recipe in bf16 on a CPU with native bf16.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

OUT = Path(__file__).parent / "results" / "gpu_image_runs.json"


def read_run(folder: Path, call: str) -> dict | None:
    summary_file = folder / "summary.json"
    if not summary_file.exists():
        return None
    summary = json.loads(summary_file.read_text())
    if summary["task"] != "image":
        return None
    saved = json.loads((folder / "config.json").read_text())
    config = {k: saved["config"][k] for k in ("model", "optim", "schedule")} | {
        "data.augment": saved["config"]["data"]["augment"],
        "train.label_smoothing": saved["config"]["train"]["label_smoothing"]}
    history = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return {
        "call": call, "run": folder.name if folder.parent.name != "runs" else
        f"{folder.parent.parent.name}/{folder.name}",
        "model": summary["model"], "config": config, "command": saved["command"][1:],
        "epochs": summary["epochs_run"],
        "val_accuracy": summary["val"]["accuracy"], "tta": summary["val"].get("tta"),
        "val_curve": [round(r["val_accuracy"], 4) for r in history],
        "train_accuracy_last": history[-1]["train_accuracy"],
        "train_seconds_shared_gpu": summary["train_seconds"], "precision": summary["precision"],
        "device": summary["host"].get("cuda"), "torch": summary["versions"]["torch"],
    }


def main() -> None:
    rows = []
    for root in map(Path, sys.argv[1:]):
        for summary in sorted(root.rglob("summary.json")):
            row = read_run(summary.parent, root.name)
            if row and not row["run"].startswith(("warm", "smoke")):
                rows.append(row)
    devices = sorted({f"{r['device']} {r['precision']}, torch {r['torch']}" for r in rows})
    table = Table(title="Image runs on a lent GPU (validation: 5,000 held-out training images); "
                  + "; ".join(devices))
    for col in ("call", "run", "epochs", "val acc", "tta", "last train acc"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["call"], r["run"], str(r["epochs"]), f"{r['val_accuracy']:.4f}", str(r["tta"]),
                      f"{r['train_accuracy_last']:.3f}")
    Console().print(table)
    OUT.write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
