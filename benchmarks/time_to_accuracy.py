"""Benchmark: time to accuracy on CIFAR-10 with the `fast` recipe, as a user would run it.

Each configuration runs as a separate process, `nnlab train image --model fast ...`, and is
timed from process start to exit: imports, the (cached) data load, the whitening init,
training, the per-epoch validation and the final test-time-augmented evaluation all count.
Accuracy is on the 5,000 validation images held out of the 50,000 training images (the
model never trains on them; no test set is used). Peak memory is the child's max RSS.

    python benchmarks/time_to_accuracy.py [--data PATH] [--runs 1] [--first-seed 0] \
        [--config "label:--epochs 10 --set model.widths=[48,128,192]" ...]

Prints a table and writes benchmarks/results/time_to_accuracy.json. Rows of earlier runs are
kept unless this run measures the same label and seed again (a 30-minute configuration is
not re-run to add another). The seeds' variants (cnn, cnn + augmentation, ResNet-18
throughput) come from image_baselines.json when present, in the table and in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_CONFIGS = ["fast (defaults):"]


def host_gflops() -> dict:
    """This host's reference speeds (nnlab.host: fp32 and bf16 matrix products and a 3x3
    convolution, each probe bounded to a second), so rows measured on different hosts of the
    same nominal size can be compared: the 2-core machines this project runs on have differed by
    1.7x between sessions, and one computes bf16 only by emulation (0.8 against 110 GFLOP/s)."""
    from nnlab.host import reference_speeds

    return reference_speeds()


def run_config(label: str, args: list[str], data: str, seed: int, out_root: Path) -> dict:
    out = out_root / f"{label.replace(' ', '_').replace('/', '-')}-seed{seed}"
    model = [] if "--model" in args else ["--model", "fast"]
    cmd = [sys.executable, "-m", "nnlab", "train", "image", *model, "--data", data,
           "--out", str(out), "--quiet", "--set", f"train.seed={seed}", *args]
    host = host_gflops()
    log = out_root / f"{out.name}.log"
    start = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label}: failed\n{log.read_text()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "label": label, "args": args, "seed": seed, "epochs": summary["epochs_run"],
        "wall_seconds": wall, "train_seconds": summary["train_seconds"],
        "val_accuracy_tta": summary["val"]["accuracy"], "tta": summary["val"].get("tta"),
        "val_accuracy_last_epoch_plain": history[-1]["val_accuracy"],
        "images_per_s": summary["images_per_s"], "precision": summary["precision"],
        "peak_rss_mib": usage.ru_maxrss / 1024, "parameters": summary["parameters"],
        "host_cpu": summary.get("host", {}).get("cpu"), "host_bf16_gflops": host["matmul_bf16_gflops"],
        "host": host,
        "command": shlex.join(["nnlab", *cmd[3:]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--runs", type=int, default=1, help="seeds per configuration")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    parser.add_argument("--config", action="append", default=None,
                        help="'label:extra nnlab train arguments'")
    parser.add_argument("--json", default="benchmarks/results/time_to_accuracy.json")
    args = parser.parse_args()
    data = args.data or str(Path(os.environ.get("NNLAB_DATA", "../shared/data")) / "cifar10")
    out_json = Path(args.json)
    rows = json.loads(out_json.read_text())["rows"] if out_json.is_file() else []
    with tempfile.TemporaryDirectory(prefix="nnlab-tta-") as tmp:
        for spec in args.config or DEFAULT_CONFIGS:
            label, _, extra = spec.partition(":")
            for seed in range(args.first_seed, args.first_seed + args.runs):
                row = run_config(label, shlex.split(extra), data, seed, Path(tmp))
                rows = [r for r in rows if (r["label"], r["seed"]) != (label, seed)] + [row]
                Console(stderr=True).print(f"{label} seed {seed}: {row['val_accuracy_tta']:.4f} "
                                           f"in {row['wall_seconds']:.0f} s")
    table = Table(title="CIFAR-10 time to accuracy (validation: 5,000 held-out training images)")
    for col in ("config", "seed", "epochs", "wall s", "train s", "val acc (TTA)", "images/s",
                "peak MiB", "host GFLOP/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["label"], str(r["seed"]), str(r["epochs"]), f"{r['wall_seconds']:.0f}",
                      f"{r['train_seconds']:.0f}", f"{r['val_accuracy_tta']:.4f}",
                      f"{r['images_per_s']:,.0f}", f"{r['peak_rss_mib']:,.0f}",
                      f"{r['host_bf16_gflops']:.0f}" if r.get("host_bf16_gflops") else "-")
    baselines_json = Path("benchmarks/results/image_baselines.json")
    baselines = json.loads(baselines_json.read_text())["rows"] if baselines_json.is_file() else []
    for b in baselines:
        table.add_row(f"[dim]{b['variant']}[/]", "0", str(b.get("epochs", "-")),
                      f"{b['wall_seconds']:.0f}" if "wall_seconds" in b else "-", "-",
                      f"{b['val_accuracy']:.4f}" if "val_accuracy" in b else "-",
                      f"{b['images_per_s']:,.0f}", "-", "-")
    Console(width=140).print(table)
    result = {"data": data, "rows": rows, "seeds_variants": baselines, "machine": platform.machine(),
              "processor": platform.processor(), "cpu_count": os.cpu_count(),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
