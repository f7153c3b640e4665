"""Benchmark: nnlab's recurrent layers on CPU, packed sequences against padded batches
(`models.layers.rnn_padded`), one training step each, same weights, same batch.

Packed sequences are what torch's RNN modules take for batches of mixed lengths; on CPU
torch runs them step by step, while padded batches go to oneDNN's fused RNN kernels. The
padded form reads the backward direction reversed within each length, so its outputs are
the packed ones (tests/test_models.py checks outputs and gradients).

- Taggers: the recurrent stack of each first-report tagger (input 50d, 32 units per
  direction; deep: 32/16/16), a batch of 32 sentences of 20-30 words (one length-sorted
  training batch on Inspec).
- Siamese encoders: the second report's one-hot encoders (vocabulary 1,877, SICK train's;
  the packed form multiplies real one-hot vectors, the padded one looks the columns up) and
  nnlab's BiLSTM over 50d embeddings, a batch of 32 pairs, 3-17 words per sentence.

Median of interleaved steps (forward, backward, SGD update) after a warm-up, so that host
drift hits both forms alike.

    python benchmarks/rnn_speed.py [--repeats 40]

Writes benchmarks/results/rnn_speed.json, with the host's reference GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nnlab import models
from nnlab.host import reference_speeds
from nnlab.models.siamese import SentenceEncoder
from nnlab.models.tagger import BiRNNStack

TAGGERS = {"birnn": ("rnn", [32]), "bilstm": ("lstm", [32]), "bigru": ("gru", [32]),
           "deep-bilstm": ("lstm", [32, 16, 16])}
# the similarity study's encoders: registry name and the options its config sets
ENCODERS = {"rnn, one-hot": ("rnn", {"inputs": "onehot"}),
            "lstm, one-hot": ("rnn", {"inputs": "onehot", "cell": "lstm"}),
            "stacked-lstm, one-hot": ("stacked-lstm", {"inputs": "onehot"}),
            "nnlab lstm (BiLSTM, max)": ("lstm", {"inputs": "embedding"})}
VOCAB = 1877


def interleaved_ms(steps: list[Callable[[], None]], repeats: int) -> list[float]:
    """Median ms per step of each, timed in turns."""
    for step in steps:
        for _ in range(3):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, out in zip(steps, times, strict=True):
            start = time.perf_counter()
            step()
            out.append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def training_step(module: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.SGD(module.parameters(), lr=0.01)

    def step() -> None:
        loss = forward().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", default="benchmarks/results/rnn_speed.json")
    args = parser.parse_args()
    host = reference_speeds()
    gen = torch.Generator().manual_seed(0)
    rows = []
    lengths = torch.randint(20, 31, (32,), generator=gen)
    x = torch.randn(32, int(lengths.max()), 50, generator=gen)
    for name, (cell, sizes) in TAGGERS.items():
        torch.manual_seed(0)
        stack = BiRNNStack(cell, 50, sizes, dropout=0.5).train()
        packed, padded = interleaved_ms([training_step(stack, lambda s=stack: s._packed(x, lengths)),
                                         training_step(stack, lambda s=stack: s._padded(x, lengths))],
                                        args.repeats)
        rows.append({"model": f"tagger {name}", "packed_ms": packed, "padded_ms": padded})
    sentence_lengths = torch.randint(3, 18, (64,), generator=gen)
    ids = torch.randint(0, VOCAB, (64, int(sentence_lengths.max())), generator=gen)
    for name, (registered, options) in ENCODERS.items():
        torch.manual_seed(0)
        entry = models.get(registered, "similarity")
        model = entry.fn(**{**entry.defaults, **options}, vocab_size=VOCAB, score_range=(1.0, 5.0))
        enc: SentenceEncoder = model.encoder.train()
        packed, padded = interleaved_ms([training_step(enc, lambda e=enc: e._packed(ids, sentence_lengths)),
                                         training_step(enc, lambda e=enc: e._padded(ids, sentence_lengths))],
                                        args.repeats)
        rows.append({"model": f"siamese {name}", "packed_ms": packed, "padded_ms": padded})
    for r in rows:
        r["speedup"] = r["packed_ms"] / r["padded_ms"]
    table = Table(title=f"Recurrent training steps, packed vs padded: {host['cpu']}, {host['threads']} "
                        f"threads, fp32 matmul {host['matmul_fp32_gflops']} GFLOP/s")
    for col in ("model", "packed ms", "padded ms", "speed-up"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['packed_ms']:.1f}", f"{r['padded_ms']:.1f}", f"{r['speedup']:.2f}x")
    Console().print(table)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "host": host, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
