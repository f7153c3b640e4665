"""Benchmark: nnlab's CRF against PyPI `pytorch-crf` on the same CPU, same inputs, same weights.

Batch 32, sequence lengths drawn from 100-200 (masked, variable), 3 to 7 tags. Measured:
training (negative log-likelihood forward + backward) and Viterbi decoding, median of
repeated runs after a warm-up. pytorch-crf's decode returns Python lists; ours one tensor.

    python benchmarks/crf_speed.py [--batch 32] [--repeats 20]

Needs `pip install pytorch-crf` (a test-only dependency). Writes benchmarks/results/crf_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nnlab.models.crf import CRF


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(num_tags: int, batch: int, repeats: int, seed: int = 0) -> dict:
    import torchcrf

    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(100, 201, (batch,), generator=gen)
    lengths[0] = 200  # the padded length
    mask = torch.arange(200).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    emissions = torch.randn(batch, 200, num_tags, generator=gen, requires_grad=True)
    tags = torch.randint(0, num_tags, (batch, 200), generator=gen)
    ours = CRF(num_tags)
    ref = torchcrf.CRF(num_tags, batch_first=True)
    ref.load_state_dict({k: v for k, v in ours.state_dict().items() if "penalty" not in k})

    def train(crf, sign: float):
        def run():
            loss = sign * crf(emissions, tags, mask, reduction="sum")
            loss.backward()
        return run

    nll_ours = ours(emissions, tags, mask, reduction="sum").item()
    nll_ref = -ref(emissions, tags, mask, reduction="sum").item()
    same_paths = ours.decode(emissions, mask)[0].masked_select(mask).tolist() == [
        t for seq in ref.decode(emissions, mask) for t in seq]
    row = {"tags": num_tags, "batch": batch, "tokens": int(mask.sum()),
           "nll_abs_diff": abs(nll_ours - nll_ref), "same_viterbi_paths": same_paths}
    row["train_ms_ours"] = 1e3 * timed(train(ours, 1.0), repeats)
    row["train_ms_pytorch_crf"] = 1e3 * timed(train(ref, -1.0), repeats)
    with torch.no_grad():
        row["decode_ms_ours"] = 1e3 * timed(lambda: ours.decode(emissions, mask), repeats)
        row["decode_ms_pytorch_crf"] = 1e3 * timed(lambda: ref.decode(emissions, mask), repeats)
    row["train_speedup"] = row["train_ms_pytorch_crf"] / row["train_ms_ours"]
    row["decode_speedup"] = row["decode_ms_pytorch_crf"] / row["decode_ms_ours"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tags", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default="benchmarks/results/crf_speed.json")
    args = parser.parse_args()
    rows = [measure(n, args.batch, args.repeats) for n in args.tags]
    table = Table(title=f"CRF: nnlab vs pytorch-crf, batch {args.batch}, lengths 100-200, "
                        f"CPU threads {torch.get_num_threads()}")
    for col in ("tags", "train ms (ours)", "train ms (pytorch-crf)", "speed-up",
                "decode ms (ours)", "decode ms (pytorch-crf)", "speed-up", "same paths"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["tags"]), f"{r['train_ms_ours']:.1f}", f"{r['train_ms_pytorch_crf']:.1f}",
                      f"{r['train_speedup']:.2f}x", f"{r['decode_ms_ours']:.1f}",
                      f"{r['decode_ms_pytorch_crf']:.1f}", f"{r['decode_speedup']:.2f}x",
                      str(r["same_viterbi_paths"]))
    Console().print(table)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
