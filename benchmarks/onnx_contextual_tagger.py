"""A tagger on contextual MiniLM features, exported to ONNX, on its run's validation data:
does the graph, driven only by the files shipped beside it, tag as nnlab does, and how fast?

Exports RUN, then tags every validation sequence twice from its tokens:
- nnlab: contextual features computed afresh (no cache, as `predict` does), the model, Viterbi;
- the export: `FILE.pieces.py` + `FILE.tokenizer.json` for the word pieces, the vocabulary in
  `FILE.json` for word and character ids, onnxruntime, `FILE.viterbi.py` (no nnlab code).
Reports span F1 of both, the share of sequences tagged identically, and each side's seconds,
with the host's reference speeds from the same run (`nnlab.host.reference_speeds`).

    python benchmarks/onnx_contextual_tagger.py RUN [--batch 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from nnlab.data.tags import spans_from_tags
from nnlab.export.onnx import export_run
from nnlab.host import cpu_name, reference_speeds
from nnlab.metrics import span_scores
from nnlab.tasks.keyphrase import predict_tags
from nnlab.tasks.keyphrase_encoding import encode
from nnlab.tasks.loading import load_run


def shipped(file: Path):
    spec = importlib.util.spec_from_file_location(file.stem.replace(".", "_"), file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def onnx_tags(folder: Path, tokens: list[list[str]], batch: int) -> list[list[str]]:
    """Each sequence's tags, as a user without nnlab gets them from the exported files."""
    meta = json.loads((folder / "m.json").read_text())
    pieces, viterbi = shipped(folder / "m.pieces.py"), shipped(folder / "m.viterbi.py")
    tok = pieces.load_tokenizer(folder / "m.tokenizer.json")
    session = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    vocab, lower = meta["vocabulary"]["items"], meta["vocabulary"]["lowercase"]
    words = {w: i for i, w in enumerate(vocab)}
    chars = {c: i for i, c in enumerate(meta["characters"]["items"])} if meta["characters"] else None
    crf, width = meta["crf"], meta["max_word_chars"]
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    out: list[list[str]] = [[] for _ in tokens]
    for k in range(0, len(order), batch):
        idx = order[k : k + batch]
        t = max(len(tokens[i]) for i in idx)
        feeds = {"words": np.zeros((len(idx), t), dtype=np.int64),
                 "mask": np.zeros((len(idx), t), dtype=bool)}
        if chars is not None:
            w = max(1, min(width, max(len(x) for i in idx for x in tokens[i])))
            feeds["chars"] = np.zeros((len(idx), t, w), dtype=np.int64)
        for row, i in enumerate(idx):
            seq = tokens[i]
            feeds["words"][row, : len(seq)] = [words.get(x.lower() if lower else x, 1) for x in seq]
            feeds["mask"][row, : len(seq)] = True
            if chars is not None:
                for j, x in enumerate(seq):
                    ids = [chars.get(c, 1) for c in x[:width]]
                    feeds["chars"][row, j, : len(ids)] = ids
        feeds |= pieces.piece_inputs([tokens[i] for i in idx], tok)
        scores = session.run(None, feeds)[0]  # (B, T, tags)
        for row, i in enumerate(idx):
            path = viterbi.viterbi(scores[row, : len(tokens[i])], crf["start"], crf["transitions"],
                                   crf["end"])
            out[i] = [meta["tags"][p] for p in path]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--batch", type=int, default=8, help="sequences per onnxruntime call")
    ap.add_argument("--json", default="benchmarks/results/onnx_contextual_tagger.json")
    args = ap.parse_args()
    host = reference_speeds()
    run, cfg, task, model = load_run(args.run, "cpu")
    info = task._info
    examples, where = task.labelled(None, "val")
    tokens, gold = examples.tokens, examples.spans

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        exported = export_run(args.run, folder / "m.onnx")
        export_s = time.perf_counter() - start
        graph_mb = (folder / "m.onnx").stat().st_size / 1e6
        start = time.perf_counter()
        graph_tags = onnx_tags(folder, tokens, args.batch)
        onnx_s = time.perf_counter() - start

    start = time.perf_counter()
    with torch.no_grad():
        enc = encode(examples, info, use_cache=False)  # features computed, as `predict` does
        preds = predict_tags(model, enc, task.runtime, args.batch)[0][0]
    nnlab_s = time.perf_counter() - start
    nnlab_tags = [[info["tags"][j] for j in p.tolist()] for p in preds]

    def f1(tags: list[list[str]]) -> float:
        return span_scores(gold, [spans_from_tags(t, info["encoding"])[0] for t in tags])["span_f1"]

    same = sum(a == b for a, b in zip(graph_tags, nnlab_tags, strict=True)) / len(tokens)
    words = sum(map(len, tokens))
    row = {"run": str(run.path), "model": cfg.model.name, "data": where, "sequences": len(tokens),
           "words": words, "contextual": info["contextual"], "parity": exported["parity"],
           "graph_mb": round(graph_mb, 1), "export_seconds": round(export_s, 1),
           "span_f1_nnlab": f1(nnlab_tags), "span_f1_onnx": f1(graph_tags), "same_tags": same,
           "seconds_nnlab": round(nnlab_s, 1), "seconds_onnx": round(onnx_s, 1), "batch": args.batch,
           "host": host, "cpu": cpu_name(), "threads": torch.get_num_threads()}
    table = Table("", "nnlab (PyTorch)", "exported (onnxruntime)", title=f"{cfg.model.name} on {where}")
    table.add_row("span F1", f"{row['span_f1_nnlab']:.4f}", f"{row['span_f1_onnx']:.4f}")
    table.add_row("seconds, tokens -> tags", f"{nnlab_s:.1f}", f"{onnx_s:.1f}")
    table.add_row("words / s", f"{words / nnlab_s:,.0f}", f"{words / onnx_s:,.0f}")
    console = Console()
    console.print(table)
    console.print(f"same tags: {same:.1%} of {len(tokens)} sequences; parity {exported['parity']}; "
                  f"graph {graph_mb:.0f} MB, exported in {export_s:.0f} s; host {cpu_name()}, "
                  f"matmul fp32 {host.get('matmul_fp32_gflops')} GFLOP/s", markup=False)
    Path(args.json).write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
