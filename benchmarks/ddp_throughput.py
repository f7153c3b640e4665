"""Benchmark: training throughput of 1 process against N torchrun processes (DDP).

The same `nnlab train` command runs once as one process with all CPU threads, then under
`torchrun --standalone --nproc_per_node N` with the threads split between the ranks (on
CUDA: one GPU per rank). The global batch is the same, so both take the same steps.
Reported: images/s of the training epochs (all ranks' images per second of wall time,
from metrics.jsonl), the whole command's wall time, and the speed-up.

    python benchmarks/ddp_throughput.py [--data PATH|generated] [--model cnn] [--procs 2]
        [--epochs 2] [--limit 20000] [--threads 2]

Writes benchmarks/results/ddp_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table


def run(procs: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    train = ["train", "image", "--model", args.model, "--data", args.data, "--epochs",
             str(args.epochs), "--set", f"data.limit={args.limit}", "--set",
             f"train.threads={threads}", "--quiet", "--out", str(out)]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = ([sys.executable, "-m", "nnlab", *train] if procs == 1 else
           [torchrun, "--standalone", f"--nproc_per_node={procs}", "-m", "nnlab", *train])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records]
    return {"processes": procs, "threads_per_process": threads,
            "images_per_s": sum(rates) / len(rates), "images_per_s_per_epoch": rates,
            "train_seconds": sum(r["seconds"] for r in records), "wall_seconds": wall,
            "val_accuracy_last": records[-1]["val_accuracy"], "command": " ".join(cmd)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("NNLAB_DATA", "generated"))
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads in all, split between the ranks")
    parser.add_argument("--json", default="benchmarks/results/ddp_throughput.json")
    args = parser.parse_args()
    if args.data not in ("generated",) and (Path(args.data) / "cifar10").is_dir():
        args.data = str(Path(args.data) / "cifar10")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(run(1, args.threads, args, Path(tmp) / "one"))
        rows.append(run(args.procs, max(1, args.threads // args.procs), args, Path(tmp) / "many"))
    rows[1]["speedup"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    table = Table(title=f"DDP throughput: {args.model}, {args.limit:,} images x {args.epochs} epochs")
    for col in ("processes", "threads each", "images/s", "train s", "wall s", "val acc", "speed-up"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["processes"]), str(r["threads_per_process"]), f"{r['images_per_s']:,.0f}",
                      f"{r['train_seconds']:.1f}", f"{r['wall_seconds']:.1f}",
                      f"{r['val_accuracy_last']:.4f}", f"{r.get('speedup', 1.0):.2f}x")
    Console().print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "model": args.model, "data": args.data, "epochs": args.epochs, "limit": args.limit,
        "rows": rows, "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "cuda": torch.cuda.get_device_name(0)
        if torch.cuda.is_available() else None,
        "when": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")


if __name__ == "__main__":
    main()
