"""Benchmark: the second report's one-hot Siamese encoders, dense one-hot input against nnlab's
lookup (`models.layers.onehot_rnn`), one training step each, same weights, same batch.

The dense form builds (2B, T, V) one-hot vectors and multiplies them by the first layer's
(G, V) input weights; the lookup takes the same columns by index. Batch 32 pairs (the
report's), sentence lengths uniform in 3-17 words (SICK's are mostly 5-15), vocabulary
1,877 (SICK train's). Median of repeated steps after a warm-up, the two forms in turns, forward + backward
+ SGD update, with dropout as each model has it.

    python benchmarks/onehot_speed.py [--repeats 60]

Writes benchmarks/results/onehot_speed.json, with the host's reference GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.nn.utils.rnn import pack_padded_sequence

from nnlab import models
from nnlab.host import reference_speeds
from nnlab.models.siamese import SentenceEncoder

# the study's one-hot variants: registry name and the options its config sets
MODELS = {"rnn": ("rnn", {}), "lstm": ("rnn", {"cell": "lstm"}), "stacked-lstm": ("stacked-lstm", {})}


def dense_encode(enc: SentenceEncoder, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The encoder's forward as it was: real one-hot vectors into the first layer."""
    x = F.one_hot(ids, enc.vocab_size).float()  # (B, T, V)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    for layer, drop in zip(enc.layers, enc.drops, strict=True):
        packed, state = layer(packed._replace(data=drop(packed.data)))
        last = state[0] if isinstance(state, tuple) else state
    return last[-1]  # (B, H), the "last" pooling of these models


def make_step(model, encode, batch: tuple):
    a, a_len, b, b_len, target = batch
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        ha, hb = encode(model.encoder, a, a_len), encode(model.encoder, b, b_len)
        pred = 1 + 4 * torch.exp(-(ha - hb).abs().sum(1))
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def interleaved_ms(steps: list, repeats: int) -> list[float]:
    """Median ms per step of each, timed in turns so that host drift hits all alike."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=1877)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--json", default="benchmarks/results/onehot_speed.json")
    args = parser.parse_args()
    host = reference_speeds()
    gen = torch.Generator().manual_seed(0)

    def sentences():
        lengths = torch.randint(3, 18, (args.batch,), generator=gen)
        return torch.randint(0, args.vocab, (args.batch, int(lengths.max())), generator=gen), lengths

    batch = (*sentences(), *sentences(), 1 + 4 * torch.rand(args.batch, generator=gen))
    rows = []
    for name, (registered, options) in MODELS.items():
        torch.manual_seed(0)
        entry = models.get(registered, "similarity")
        model = entry.fn(**{**entry.defaults, **options}, vocab_size=args.vocab,
                         score_range=(1.0, 5.0), inputs="onehot")
        model.train()
        dense, lookup = interleaved_ms([make_step(model, dense_encode, batch),
                                        make_step(model, lambda enc, ids, n: enc(ids, n), batch)],
                                       args.repeats)
        rows.append({"model": name, "dense_ms": dense, "lookup_ms": lookup, "speedup": dense / lookup})
    table = Table(title=f"One-hot Siamese encoders, a training step of {args.batch} pairs, vocabulary "
                        f"{args.vocab}, {host['cpu']}, {host['threads']} threads, fp32 matmul "
                        f"{host['matmul_fp32_gflops']} GFLOP/s")
    for col in ("model", "dense one-hot ms", "lookup ms", "speed-up"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['dense_ms']:.1f}", f"{r['lookup_ms']:.1f}", f"{r['speedup']:.2f}x")
    Console().print(table)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "host": host, "vocab": args.vocab,
                               "batch": args.batch, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
