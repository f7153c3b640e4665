"""Benchmark: every keyphrase tagger of the first report, plus the tuned ones, on real data.

Each variant trains with nnlab's normal loop (train file; epoch picked on the validation
file by span F1, early stopping), one after another on the same data, same seed. The table
gives validation exact-match span F1 / precision / recall, token-level keyword F1 (the
report's metric), best epoch, epochs run, seconds per epoch and parameters.

    python benchmarks/keyphrase_variants.py --data ../shared/data/keyphrase/inspec \\
        [--only bilstm-crf+glove ...] [--epochs 30] [--json benchmarks/results/keyphrase_inspec.json]

Runs are kept under --runs (default a temporary folder), so they can feed `nnlab report`.
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

from nnlab.experiment import resolve_config, train_run

GLOVE = "glove-6b-50d"
# name -> (model, embeddings, extra --set overrides)
VARIANTS: dict[str, tuple[str, str, list[str]]] = {}
for _model in ("birnn", "bilstm", "bigru", "deep-bilstm"):
    for _head in ("", "-crf"):
        VARIANTS[f"{_model}{_head}"] = (f"{_model}{_head}", "", [])
        VARIANTS[f"{_model}{_head}+glove"] = (f"{_model}{_head}", GLOVE, [])
VARIANTS["bilstm-cnn-crf+glove"] = ("bilstm-cnn-crf", GLOVE, [])
VARIANTS["bilstm-lstm-crf+glove"] = ("bilstm-lstm-crf", GLOVE, [])
# contextual word features of a frozen all-MiniLM-L6-v2 (the extra nnlab[minilm]), its top 4
# layers mixed, beside GloVe; whole documents, so each word's context is its abstract
MINILM = ["data.contextual='minilm'", "data.contextual_layers=4", "data.train_unit='document'",
          "model.hidden_sizes=[128]"]
VARIANTS["bilstm-crf+glove+minilm"] = ("bilstm-crf", GLOVE, MINILM)
VARIANTS["bilstm-cnn-crf+glove+minilm"] = ("bilstm-cnn-crf", GLOVE, MINILM)


def run_variant(name: str, data: str, runs: Path, epochs: int | None, extra: list[str]) -> dict:
    model, embeddings, sets = VARIANTS[name]
    cfg = resolve_config("keyphrase", model, data=data, epochs=epochs, sets=[*sets, *extra],
                         embeddings=embeddings or None)
    out = runs / name
    start = time.perf_counter()
    summary = train_run(cfg, out, Console(stderr=True, quiet=True), progress=False)
    wall = time.perf_counter() - start
    val = summary["val"]
    return {
        "variant": name, "model": model, "embeddings": embeddings or "random",
        "span_f1": val["span_f1"], "span_precision": val["span_precision"],
        "span_recall": val["span_recall"], "token_f1": val["token_f1"],
        "token_accuracy": val["token_accuracy"], "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "seconds_per_epoch": summary["train_seconds"] / summary["epochs_run"],
        "wall_seconds": wall, "parameters": summary["parameters"], "run": str(out),
        # the process's peak so far: run one variant per process (--only) to read it per model
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "contextual_seconds": json.loads((out / "config.json").read_text())["task_info"]
        .get("contextual", {}).get("seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/keyphrase/inspec")
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: each model's recipe")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value for all")
    parser.add_argument("--runs", default=None, help="folder for the run folders (default: temporary)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    runs = Path(args.runs or tempfile.mkdtemp(prefix="nnlab-keyphrase-"))
    from nnlab.host import reference_speeds

    host = reference_speeds()  # this host's name and fp32/bf16 matmul and conv GFLOP/s
    rows = []
    for name in args.only or list(VARIANTS):
        rows.append(run_variant(name, args.data, runs, args.epochs, args.sets))
        r = rows[-1]
        print(f"{name}: span F1 {r['span_f1']:.4f} (epoch {r['best_epoch']}/{r['epochs_run']}, "
              f"{r['seconds_per_epoch']:.1f} s/epoch)", flush=True)
    table = Table(title=f"keyphrase taggers on {args.data} (validation), CPU threads "
                        f"{torch.get_num_threads()}")
    for col in ("variant", "span F1", "P", "R", "token F1", "best/run epochs", "s/epoch", "params"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["variant"], f"{r['span_f1']:.4f}", f"{r['span_precision']:.3f}",
                      f"{r['span_recall']:.3f}", f"{r['token_f1']:.4f}",
                      f"{r['best_epoch']}/{r['epochs_run']}", f"{r['seconds_per_epoch']:.1f}",
                      f"{r['parameters']:,}")
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
