"""A comparative report built from run folders alone: Markdown plus self-contained HTML.

Nothing is retrained: the table, curves and confusion matrices come from each run's
summary.json, metrics.jsonl and eval/val.json, so a report can be rebuilt at any time.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

import nnlab
from nnlab.runs import RunDir, atomic_write, atomic_write_text


@dataclass
class RunView:
    name: str
    run: RunDir
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    val: dict[str, Any]


def read_run(path: Path, name: str | None = None) -> RunView:
    run = RunDir.open(path)
    val_file = run.path / "eval" / "val.json"
    return RunView(name=name or run.path.name, run=run, config=run.read_config(),
                   summary=run.read_summary(), history=run.read_metrics(),
                   val=json.loads(val_file.read_text()) if val_file.is_file() else {})


def _overlay(views: list[RunView], metric: str, path: Path) -> None:
    """All variants' validation metric and loss per epoch on shared axes."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for v in views:
        epochs = [r["epoch"] for r in v.history]
        line = axes[0].plot(epochs, [r[f"val_{metric}"] for r in v.history], marker="o",
                            markersize=3, label=v.name)[0]
        train = [r.get(f"train_{metric}") for r in v.history]  # absent when not tracked in training
        if any(t is not None for t in train):
            axes[0].plot(epochs, train, ":", color=line.get_color(), alpha=0.7)
        axes[1].plot(epochs, [r["val_loss"] for r in v.history], marker="o", markersize=3,
                     color=line.get_color(), label=v.name)
        axes[1].plot(epochs, [r["train_loss"] for r in v.history], ":", color=line.get_color(),
                     alpha=0.7)
    for ax, label in ((axes[0], metric), (axes[1], "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} (solid: validation, dotted: train)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _rows(views: list[RunView]) -> tuple[list[str], list[list[str]]]:
    metric = views[0].summary["main_metric"]
    # the unit each task counts throughput in (summary key `{unit}_per_s`)
    unit = {"image": "images", "keyphrase": "sentences", "similarity": "pairs"}.get(
        views[0].summary["task"], "examples")
    header = ["variant", "model", f"val {metric}", "val loss", "best epoch", "epochs",
              "train s", f"{unit}/s", "parameters", "augment"]
    rows = []
    for v in views:
        s, cfg = v.summary, v.config["config"]
        rows.append([
            v.name, s["model"], f"{s['val'][metric]:.4f}", f"{s['val']['loss']:.4f}",
            str(s["best_epoch"]), str(s["epochs_run"]), f"{s['train_seconds']:.1f}",
            f"{s.get(f'{unit}_per_s') or 0:,.0f}", f"{s['parameters']:,}", cfg["data"]["augment"],
        ])
    return header, rows


def _data_line(views: list[RunView]) -> str:
    d = views[0].config["task_info"]["data"]
    return (f"{d['path']} ({d['format']}, fingerprint {d['fingerprint'][:12]}): "
            f"{d['train_examples']:,} training and {d['val_examples']:,} validation examples, "
            "the same split for every variant")


def _per_class(views: list[RunView]) -> tuple[list[str], list[list[str]]]:
    classes = views[0].val.get("classes", []) if "per_class" in views[0].val else []
    header = ["class"] + [v.name for v in views]
    rows = []
    for c in classes:
        cells = []
        for v in views:
            acc = v.val.get("per_class", {}).get(c, {}).get("accuracy")
            cells.append("" if acc is None else f"{acc:.3f}")
        rows.append([c, *cells])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;
padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}img{max-width:100%}.grid{display:grid;
grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1em}code{background:#f3f3f3;
padding:1px 4px}"""


def build_report(run_paths: list[Path], out: Path, title: str, notes: list[str] | None = None,
                 names: list[str] | None = None) -> Path:
    """Write out/report.md and out/report.html comparing the given runs; return the HTML path."""
    views = [read_run(p, n) for p, n in zip(run_paths, names or [None] * len(run_paths),
                                            strict=True)]
    metric = views[0].summary["main_metric"]
    out.mkdir(parents=True, exist_ok=True)
    overlay = out / "curves_all.png"
    _overlay(views, metric, overlay)
    header, rows = _rows(views)
    pc_header, pc_rows = _per_class(views)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    s0 = views[0].summary
    repro = [f"nnlab {nnlab.__version__}, torch {s0['versions']['torch']}, "
             f"Python {platform.python_version()}, {platform.machine()}, "
             f"{s0['host']['cpu_threads']} CPU threads, device {s0['device']}, "
             f"precision {s0['precision']}",
             f"data: {_data_line(views)}",
             f"seeds: {sorted({v.config['config']['train']['seed'] for v in views})}, "
             f"split seed {views[0].config['config']['data']['split_seed']}",
             f"written {stamp}"]
    notes = notes or []

    md = [f"# {title}", "", *notes, "", _md_table(header, rows), "",
          "Validation figures use the best epoch's weights; the validation split is carved "
          "from the training data, never the test set.", "",
          f"![training curves]({overlay.name})", ""]
    if pc_rows:
        md += ["## Per-class validation accuracy", "", _md_table(pc_header, pc_rows), ""]
    md += ["## Runs", ""]
    for v in views:
        md += [f"### {v.name}", "", f"run folder: `{v.run.path}`", ""]
        for png in ("curves.png", "confusion_val.png", "scatter_val.png"):
            if (v.run.plots / png).is_file():
                md.append(f"![{v.name} {png}]({_rel(v.run.plots / png, out)})")
        md.append("")
    md += ["## Reproducibility", "", *[f"- {line}" for line in repro], ""]
    atomic_write_text(out / "report.md", "\n".join(md))

    body = [f"<h1>{html.escape(title)}</h1>", *[f"<p>{html.escape(n)}</p>" for n in notes],
            _html_table(header, rows),
            "<p>Validation figures use the best epoch's weights; the validation split is carved "
            "from the training data, never the test set.</p>",
            "<h2>Training curves</h2>", _img(overlay, "training curves of all variants")]
    if pc_rows:
        body += ["<h2>Per-class validation accuracy</h2>", _html_table(pc_header, pc_rows)]
    body.append("<h2>Runs</h2>")
    for v in views:
        body += [f"<h3>{html.escape(v.name)}</h3>",
                 f"<p>run folder: <code>{html.escape(str(v.run.path))}</code></p><div class=grid>"]
        for png, alt in (("curves.png", "curves"), ("confusion_val.png", "confusion matrix"),
                         ("scatter_val.png", "predicted against gold scores")):
            if (v.run.plots / png).is_file():
                body.append(_img(v.run.plots / png, f"{v.name} {alt}"))
        body.append("</div>")
    body += ["<h2>Reproducibility</h2><ul>",
             *[f"<li>{html.escape(line)}</li>" for line in repro], "</ul>"]
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    atomic_write_text(out / "report.html", page)
    return out / "report.html"


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)
