"""Benchmark: per-step overhead of nnlab's training loop against a bare PyTorch loop.

Both loops train the same model on the same in-memory batches (no augmentation) for one
epoch; the bare loop is forward, cross-entropy, zero_grad, backward, step and nothing else.
nnlab's adds batch gathering from the uint8 tensor, device-side metric sums, the schedule,
the progress/log bookkeeping. Reported: ms per step and the overhead in percent.

    python benchmarks/loop_overhead.py [--models cnn fast] [--batch 128] [--steps 60]

Writes benchmarks/results/loop_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from nnlab.device import make_runtime
from nnlab.experiment import resolve_config
from nnlab.runs import RunDir
from nnlab.tasks.image import ImageTask
from nnlab.train import Trainer


def measure(model_name: str, batch: int, steps: int) -> dict:
    cfg = resolve_config("image", model_name, data="generated", epochs=1, sets=[
        f"data.batch_size={batch}", f"data.limit={batch * steps}", "data.augment='none'",
        "train.lookahead=false", "train.precision='fp32'"])
    runtime = make_runtime(cfg.train)
    task = ImageTask.for_training(cfg, runtime)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(task, cfg, runtime, RunDir(tmp), progress=False)
        gen = torch.Generator().manual_seed(0)
        batches = [task.collate(idx, gen, 1) for idx in task.train_batches(gen, 1)]
        model, opt = trainer.model, trainer.optimizer

        def bare() -> float:
            start = time.perf_counter()
            for x, y in batches:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return (time.perf_counter() - start) / len(batches)

        def nnlab_loop() -> float:
            start = time.perf_counter()
            trainer._train_epoch(1)
            return (time.perf_counter() - start) / task.steps_per_epoch()

        bare(), nnlab_loop()  # warm-up
        bare_s = min(bare() for _ in range(2))
        loop_s = min(nnlab_loop() for _ in range(2))
    return {"model": model_name, "batch": batch, "steps": len(batches),
            "bare_ms_per_step": bare_s * 1e3, "nnlab_ms_per_step": loop_s * 1e3,
            "overhead_percent": 100 * (loop_s - bare_s) / bare_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "classic-cnn-gap", "fast"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", default="benchmarks/results/loop_overhead.json")
    args = parser.parse_args()
    rows = [measure(m, args.batch, args.steps) for m in args.models]
    table = Table(title=f"training-loop overhead, batch {args.batch}, CPU threads "
                        f"{torch.get_num_threads()}")
    for col in ("model", "bare ms/step", "nnlab ms/step", "overhead %"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['bare_ms_per_step']:.1f}", f"{r['nnlab_ms_per_step']:.1f}",
                      f"{r['overhead_percent']:+.1f}")
    Console(width=140).print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=2) + "\n")


if __name__ == "__main__":
    main()
