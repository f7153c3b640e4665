"""Inference latency and throughput: PyTorch eager against onnxruntime, at batch 1 and 64.

Models: `cnn`, `resnet18`, `fast` (CIFAR-sized images), the `bilstm-crf` tagger (sentences of
25 tokens, emissions only: the CRF's Viterbi runs beside the graph in both cases) and the
similarity `lstm` (pairs of 10-token sentences). Weights are random: speed does not depend on
them. Both runtimes use the process's threads (2 on the reference machine); each figure is
the median of `--repeats` timed calls after warm-up, with the host's reference speeds from
the same run (`nnlab.host.reference_speeds`).

    python benchmarks/inference_speed.py [--repeats 30] [--out benchmarks/results/inference_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from nnlab import models, tasks
from nnlab.config import RunConfig
from nnlab.data.tags import tag_set
from nnlab.device import make_runtime
from nnlab.export.onnx import export_model
from nnlab.host import cpu_name, reference_speeds

VOCAB = {"items": ["<pad>", "<unk>", *[f"w{i}" for i in range(19_998)]], "lowercase": True,
         "trained": 20_000}
INFO = {
    "image": {"classes": [str(i) for i in range(10)], "image_shape": [3, 32, 32],
              "mean": [0.5] * 3, "std": [0.25] * 3},
    "keyphrase": {"vocab": VOCAB, "tags": tag_set(["KEY"], "bioes"), "encoding": "bioes",
                  "chars": {"items": ["<pad>", "<unk>", *"abcdefghijklmnopqrstuvwxyz"]},
                  "max_word_chars": 20, "tokenizer": {"ptb_brackets": False, "ptb_quotes": False}},
    "similarity": {"vocab": VOCAB, "score_range": [1.0, 5.0]},
}
MODELS = ("cnn", "resnet18", "fast", "bilstm-crf", "lstm")


def inputs_for(task: str, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    if task == "image":
        return {"images": torch.rand(batch, 3, 32, 32, generator=gen)}
    if task == "keyphrase":
        lengths = torch.randint(10, 26, (batch,), generator=gen)
        lengths[0] = 25
        mask = torch.arange(25).unsqueeze(0) < lengths.unsqueeze(1)
        return {"words": torch.randint(2, 20_000, (batch, 25), generator=gen) * mask, "mask": mask}
    x = {}
    for side in ("a", "b"):
        lengths = torch.randint(5, 11, (batch,), generator=gen)
        lengths[0] = 10
        x[side] = torch.randint(2, 20_000, (batch, 10), generator=gen) * (
            torch.arange(10).unsqueeze(0) < lengths.unsqueeze(1))
        x[f"{side}_len"] = lengths
    return x


def median_seconds(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/inference_speed.json")
    args = parser.parse_args()
    console = Console()
    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            kind = tasks.get(models.get(name).task)
            cfg = RunConfig(task=kind.name)
            cfg.model.name = name
            cfg.train.precision = "fp32"
            task = kind.for_run(cfg, make_runtime(cfg.train), INFO[kind.name])
            torch.manual_seed(0)
            model = task.build_model().eval()
            graph = Path(tmp) / f"{name}.onnx"
            export_model(task, model, graph)
            session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
            module = task.export_spec(model).module.eval()
            for batch in (1, 64):
                x = inputs_for(kind.name, batch, torch.Generator().manual_seed(batch))
                feed = {k: v.numpy() for k, v in x.items()}

                def eager(x=x, module=module):
                    with torch.inference_mode():
                        module(*x.values())

                def onnx(feed=feed, session=session):
                    session.run(None, feed)

                t_eager = median_seconds(eager, args.repeats)
                t_onnx = median_seconds(onnx, args.repeats)
                rows.append({"model": name, "task": kind.name, "batch": batch,
                             "eager_ms": t_eager * 1e3, "onnx_ms": t_onnx * 1e3,
                             "eager_per_s": batch / t_eager, "onnx_per_s": batch / t_onnx})
    host = {"cpu": cpu_name(), "threads": threads, **reference_speeds()}
    table = Table(title=f"inference, median of {args.repeats} calls; {host['cpu']}, {threads} threads")
    for col in ("model", "batch", "eager ms", "onnxruntime ms", "eager items/s", "onnxruntime items/s",
                "speed-up"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], str(r["batch"]), f"{r['eager_ms']:.2f}", f"{r['onnx_ms']:.2f}",
                      f"{r['eager_per_s']:,.0f}", f"{r['onnx_per_s']:,.0f}",
                      f"{r['eager_ms'] / r['onnx_ms']:.2f}x")
    console.print(table)
    console.print(f"host reference: {host}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {"host": host, "repeats": args.repeats, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
