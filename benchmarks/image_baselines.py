"""Benchmark: the first report's CNN baselines on real CIFAR-10, plus ResNet-18 throughput.

Trains `cnn`, `cnn-dropout` and `cnn` + the report's Keras augmentation with their recipes
(RMSprop 1e-3, batch 64) on the 45,000-image training split and reports the validation
accuracy of the best epoch (5,000 held-out training images: never a test set), epochs,
seconds per epoch and images/s. ResNet-18 and plain-18 get a throughput figure only: a full
run needs a GPU. Also times the cached load of the 50,000 images.

    python benchmarks/image_baselines.py [--data PATH] [--epochs 15] [--out DIR]

Prints a table and writes benchmarks/results/image_baselines.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nnlab import tasks
from nnlab.data.images import load_images
from nnlab.device import make_runtime
from nnlab.experiment import resolve_config, train_run
from nnlab.tasks.image import ImageTask
from nnlab.train import Trainer

VARIANTS = [
    ("cnn", "cnn", []),
    ("cnn-dropout", "cnn-dropout", []),
    ("cnn + keras augmentation", "cnn", ["data.augment='keras'"]),
]


def throughput(model: str, data: str, steps: int = 6, batch: int = 128) -> float:
    """Training images/s of `model` over a few steps after one warm-up step."""
    cfg = resolve_config("image", model, data=data, sets=[f"data.batch_size={batch}"])
    runtime = make_runtime(cfg.train)
    task = ImageTask.for_training(cfg, runtime)
    with tempfile.TemporaryDirectory() as tmp:
        from nnlab.runs import RunDir

        trainer = Trainer(task, cfg, runtime, RunDir(tmp), progress=False)
        gen = torch.Generator().manual_seed(0)
        batches = task.train_batches(gen, 1)
        start = None
        for i in range(steps + 1):
            if i == 1:
                start = time.perf_counter()
            out = task.step(trainer.model, task.collate(next(batches), gen, 1))
            trainer.optimizer.zero_grad()
            out.loss.backward()
            trainer.optimizer.step()
        assert start is not None
        return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default=None, help="keep the run folders here")
    parser.add_argument("--json", default="benchmarks/results/image_baselines.json")
    args = parser.parse_args()
    console = Console(stderr=True)
    data = tasks.require_data(tasks.get("image"), args.data)

    load_images(data)  # decode once (or hit the cache)
    t = time.perf_counter()
    load_images(data)
    cached_load_s = time.perf_counter() - t

    out_root = Path(args.out or tempfile.mkdtemp(prefix="nnlab-bench-"))
    rows = []
    for name, model, sets in VARIANTS:
        cfg = resolve_config("image", model, data=data, epochs=args.epochs, sets=sets)
        run_dir = out_root / name.replace(" ", "").replace("+", "-")
        start = time.perf_counter()
        summary = train_run(cfg, run_dir, console, progress=False)
        wall = time.perf_counter() - start
        history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rows.append({
            "variant": name, "model": model, "augment": cfg.data.augment,
            "val_accuracy": summary["val"]["accuracy"], "val_loss": summary["val"]["loss"],
            "best_epoch": summary["best_epoch"], "epochs": summary["epochs_run"],
            "first_epoch_reaching_70": next((r["epoch"] for r in history
                                             if r["val_accuracy"] >= 0.70), None),
            "seconds_per_epoch": summary["train_seconds"] / summary["epochs_run"],
            "images_per_s": summary["images_per_s"], "wall_seconds": wall,
            "parameters": summary["parameters"],
        })
    for model in ("resnet18", "plain18"):
        rows.append({"variant": f"{model} (throughput only)", "model": model,
                     "images_per_s": throughput(model, data)})

    table = Table(title=f"CIFAR-10 baselines ({data}), validation = 5,000 held-out train images")
    for col in ("variant", "val acc", "best epoch", "epochs", "s/epoch", "images/s", "params"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["variant"], f"{r['val_accuracy']:.4f}" if "val_accuracy" in r else "-",
                      str(r.get("best_epoch", "-")), str(r.get("epochs", "-")),
                      f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else "-",
                      f"{r['images_per_s']:,.0f}", f"{r.get('parameters', 0):,}")
    Console(width=140).print(table)
    Console().print(f"cached load of {data}: {cached_load_s:.3f} s")
    result = {"data": data, "epochs": args.epochs, "cached_load_seconds": cached_load_s,
              "rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(), "processor": platform.processor(),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
