"""Benchmark: the second report's Siamese variants, MaLSTM and nnlab's best LSTM on SICK, next
to two untrained baselines (average-GloVe cosine, zero-shot all-MiniLM-L6-v2 cosine).

Each variant trains with nnlab's normal loop on SICK train, the epoch picked on SICK trial
by Pearson r; same seed for all. The table gives trial Pearson r, Spearman rho, MSE, best
epoch, epochs run and seconds per epoch.

    python benchmarks/similarity_variants.py --data ../shared/data/sick [--only lstm+glove ...]
        [--json benchmarks/results/similarity_sick.json]

The MiniLM baseline needs `pip install 'nnlab[minilm]'`; it is skipped (and says so) without.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nnlab.config import RunConfig
from nnlab.errors import NnlabError
from nnlab.experiment import resolve_config, train_run
from nnlab.tasks.similarity import load_pairs

GLOVE = "glove-6b-50d"
ONEHOT = ["model.inputs='onehot'"]
# the report's LSTM: one direction, last state, exp(-L1), SGD from 0.1 with the plateau rule
REPORT_LSTM = ["model.head='malstm'", "model.bidirectional=false", "model.pooling='last'",
               "optim.name='sgd'", "optim.lr=0.1", "optim.momentum=0.0", "schedule.name='plateau'",
               "schedule.patience=2", "schedule.factor=0.5", "train.lookahead=false", "train.epochs=20"]
CONSTANT_LR = ["schedule.name='constant'"]
VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "rnn (one-hot)": ("rnn", "", ONEHOT),
    "rnn + glove": ("rnn", GLOVE, []),
    "lstm (one-hot)": ("lstm", "", REPORT_LSTM + ONEHOT),
    "lstm + glove": ("lstm", GLOVE, REPORT_LSTM),
    "lstm + glove, constant lr": ("lstm", GLOVE, REPORT_LSTM + CONSTANT_LR),
    "stacked-lstm (one-hot)": ("stacked-lstm", "", ONEHOT),
    "stacked-lstm + glove": ("stacked-lstm", GLOVE, []),
    "stacked-lstm + glove, constant lr": ("stacked-lstm", GLOVE, CONSTANT_LR),
    "malstm + glove": ("malstm", GLOVE, []),
    "lstm best (distribution head)": ("lstm", GLOVE, []),
    "lstm best, exp(-L1) head": ("lstm", GLOVE, ["model.head='malstm'"]),
    "lstm best, mlp head": ("lstm", GLOVE, ["model.head='mlp'"]),
    "lstm best, cosine head": ("lstm", GLOVE, ["model.head='cosine'"]),
    # fine-tuned all-MiniLM-L6-v2 (the extra nnlab[minilm]); word pieces, no GloVe
    "minilm bi-encoder, cosine head": ("minilm", "", ["model.head='cosine'"]),
    "minilm bi-encoder, dist head": ("minilm", "", ["model.head='dist'"]),
    "minilm cross-encoder, mlp head": ("minilm-cross", "", ["model.head='mlp'"]),
    "minilm cross-encoder, dist head": ("minilm-cross", "", ["model.head='dist'"]),
}


def run_variant(name: str, data: str, runs: Path, extra: list[str]) -> dict:
    model, embeddings, sets = VARIANTS[name]
    cfg = resolve_config("similarity", model, data=data, sets=[*sets, *extra],
                         embeddings=embeddings or None)
    out = runs / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    start = time.perf_counter()
    summary = train_run(cfg, out, Console(stderr=True, quiet=True), progress=False)
    val = summary["val"]
    return {"variant": name, "model": model, "inputs": embeddings or (
                "one-hot" if ONEHOT[0] in sets else "random"),
            "pearson": val["pearson"], "spearman": val["spearman"], "mse": val["mse"],
            "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
            "seconds_per_epoch": summary["train_seconds"] / summary["epochs_run"],
            "wall_seconds": time.perf_counter() - start, "parameters": summary["parameters"],
            # this process's peak so far: run one variant per process (--only) to read it per model
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "run": str(out)}


def baselines(data: str) -> list[dict]:
    from nnlab.tasks.similarity_baselines import glove_cosine, minilm_cosine

    val = load_pairs(data, RunConfig(task="similarity")).val
    rows = []
    for name, fn in (("baseline: GloVe average, cosine", glove_cosine),
                     ("baseline: all-MiniLM-L6-v2 zero-shot, cosine", minilm_cosine)):
        start = time.perf_counter()
        try:
            m = {k: v for k, v in fn(val).items() if k not in ("predictions", "gold")}
        except NnlabError as e:
            print(f"{name}: skipped ({e})")
            continue
        rows.append({"variant": name, "model": "-", "inputs": "-", **m, "best_epoch": None,
                     "epochs_run": 0, "seconds_per_epoch": None,
                     "wall_seconds": time.perf_counter() - start, "parameters": None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/sick")
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=None)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value for all")
    parser.add_argument("--runs", default=None, help="folder for the run folders (default: temporary)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    runs = Path(args.runs or tempfile.mkdtemp(prefix="nnlab-similarity-"))
    from nnlab.host import reference_speeds

    host = reference_speeds()  # this host's fp32/bf16 matmul and conv GFLOP/s, with its CPU name
    rows = [] if args.no_baselines else baselines(args.data)
    for name in args.only or list(VARIANTS):
        rows.append(run_variant(name, args.data, runs, args.sets))
        r = rows[-1]
        print(f"{name}: r {r['pearson']:.4f} (epoch {r['best_epoch']}/{r['epochs_run']}, "
              f"{r['seconds_per_epoch']:.1f} s/epoch)", flush=True)
    table = Table(title=f"sentence-pair similarity on {args.data} (validation = trial), CPU threads "
                        f"{torch.get_num_threads()}")
    for col in ("variant", "Pearson r", "Spearman rho", "MSE", "best/run epochs", "s/epoch", "params"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["variant"], f"{r['pearson']:.4f}", f"{r['spearman']:.4f}", f"{r['mse']:.4f}",
                      f"{r['best_epoch']}/{r['epochs_run']}" if r["epochs_run"] else "-",
                      f"{r['seconds_per_epoch']:.1f}" if r["seconds_per_epoch"] else "-",
                      f"{r['parameters']:,}" if r["parameters"] else "-")
    Console().print(table)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"data": args.data, "torch": torch.__version__, "host": host,
                                   "threads": torch.get_num_threads(), "sets": args.sets,
                                   "rows": rows}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
