"""A comparative report built from run folders alone: self-contained HTML plus a Markdown twin.

Nothing is retrained: the table, curves, per-class and per-type tables, confusion matrices,
scatter plots and model summaries come from each run's config.json, summary.json,
metrics.jsonl and eval/*.json, so a report can be rebuilt at any time (`nnlab report`).
Published figures appear in their own column, marked as quoted: they are not ours and were
measured on other splits, hardware and budgets.
"""

from __future__ import annotations

import base64
import html
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

import nnlab
from nnlab import config as config_mod
from nnlab import tasks
from nnlab.claims import Claim, lr_cuts, measure, scores_by_variant, seed_rows
from nnlab.device import make_runtime
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write, atomic_write_texts, make_folder, read_json
from nnlab.runs import RunDir
from nnlab.tasks import Section, Task
from nnlab.tasks.base import fmt

# labels hold user strings (class and variant names): "$\foo$" is text, not mathtext
matplotlib.rcParams["text.parse_math"] = False

@dataclass
class RunView:
    name: str
    run: RunDir
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    val: dict[str, Any]
    test: dict[str, Any]
    variant: dict[str, Any]  # variant.json of a study run: its name, quoted figure, overrides

    @property
    def baseline(self) -> bool:
        return self.summary.get("kind") == "baseline"


def _json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def read_run(path: Path, name: str | None = None) -> RunView:
    run = RunDir.open(path)
    if not run.finished:
        raise NnlabError(f"{run.path}: run not finished (no summary.json); finish it with "
                         f"`nnlab train --resume {run.path}`")
    variant = _json(run.path / "variant.json")
    summary = run.read_summary()
    if name is None and variant.get("variant"):
        name = str(variant["variant"]) + (f" (seed {variant['seed']})" if variant.get("seeded") else "")
    return RunView(name=name or run.path.name, run=run,
                   config=run.read_config(), summary=summary,
                   history=[] if summary.get("kind") == "baseline" else run.read_metrics(),
                   val=_json(run.path / "eval" / "val.json"),
                   test=_json(run.path / "eval" / "test.json"), variant=variant)


def _figures(view: RunView) -> list[tuple[str, str]]:
    """A run's own figures (file name in plots/, what it shows): its curves, then its task's."""
    task = view.summary.get("task")
    own = tasks.get(task).run_figures if task in tasks.names() else ()
    return [("curves.png", "curves"), *own]


# -- figures ------------------------------------------------------------------------------------
def _overlay(views: list[RunView], metric: str, path: Path, label: Callable[[str], str]) -> None:
    """All variants' main metric and loss per epoch on shared axes (train dotted)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
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
    for ax, name in ((axes[0], label(metric)), (axes[1], "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{name} (solid: validation, dotted: train)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    losses = [r[k] for v in views for r in v.history for k in ("train_loss", "val_loss")
              if r.get(k) is not None and r[k] > 0]
    if losses and max(losses) / min(losses) > 10:  # a loss falling by decades reads best on a log axis
        axes[1].set_yscale("log")
        axes[1].yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes[1].yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes[1].yaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(labels) - 1) // 4)))
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(labels) - 1) // 4), 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


# -- tables ---------------------------------------------------------------------------------------
def _rows(views: list[RunView], task: type[Task]) -> tuple[list[str], list[list[str]], list[str]]:
    metric, unit, extras, label = task.main_metric, task.unit, task.extra_metrics, task.label
    with_test = any(v.test for v in views)
    header = ["variant", "model", f"val {label(metric)}", *[f"val {label(m)}" for m in extras]]
    header += [f"test {label(metric)}"] if with_test else []
    header += ["val loss", "best / epochs", "train s", f"{unit}/s", "parameters", "dtype"]
    header += list(task.config_columns)
    quoted = any(v.variant.get("quoted") for v in views)
    header += ["quoted (published, not ours)"] if quoted else []
    rows = []
    for v in views:
        s, cfg = v.summary, v.config["config"]
        row = [v.name, s["model"], fmt(s["val"].get(metric)), *[fmt(s["val"].get(m)) for m in extras]]
        row += [fmt(v.test.get(metric))] if with_test else []
        rate = s.get(f"{unit}_per_s")
        row += [fmt(s["val"].get("loss")),
                "untrained baseline" if v.baseline else f"{s['best_epoch']} / {s['epochs_run']}",
                f"{s['train_seconds']:.1f}", f"{rate:,.0f}" if rate else "–",
                f"{s['parameters']:,}", s.get("precision", "fp32")]
        row += [str(_config_value(cfg, key)) for key in task.config_columns.values()]
        row += [v.variant.get("quoted", "")] if quoted else []
        rows.append(row)
    return _fold_constant(header, rows, ("dtype", *task.config_columns))


def _config_value(cfg: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        cfg = cfg.get(part, {}) if isinstance(cfg, dict) else {}
    return cfg if cfg != {} else "–"


def _fold_constant(header: list[str], rows: list[list[str]], names: tuple[str, ...]
                   ) -> tuple[list[str], list[list[str]], list[str]]:
    """Drop the named columns whose value is the same in every row, returning them as
    "name value" to be said once below the table (which then fits a window)."""
    keep, folded = [], []
    for i, h in enumerate(header):
        if h in names and len({r[i] for r in rows}) == 1:
            folded.append(f"{h} {rows[0][i]}")
        else:
            keep.append(i)
    header = [header[i] for i in keep]
    return header, [[r[i] for i in keep] for r in rows], folded


def _data_line(views: list[RunView]) -> str:
    d = views[0].config["task_info"]["data"]
    same = all(v.config["task_info"]["data"]["fingerprint"] == d["fingerprint"] for v in views)
    return (f"{d['path']} ({d['format']}): {d['train_examples']:,} training and "
            f"{d['val_examples']:,} validation examples"
            + (", the same split for every variant" if same else
               "; NOT the same data for every variant (see fingerprints below)"))


def _model_summary(v: RunView, task: type[Task]) -> tuple[list[str], list[list[str]]]:
    """The variant's layers and parameters, rebuilt from its config (no weights needed)."""
    cfg = config_mod.from_dict(v.config["config"], str(v.run.path / "config.json"))
    used = task.for_run(cfg, make_runtime(cfg.train), v.config["task_info"],
                        str(v.run.path / "config.json"))
    return used.model_table(used.build_model())


MD_SPECIAL = re.compile(r"([\\`*_<>|])")


def _md(text: object) -> str:
    """User text (names, paths, notes) as literal Markdown: on one line, with the characters
    that make HTML tags, code, emphasis or table cells backslash-escaped (CommonMark) and the
    joints of links and images broken, so `<script>` or `[x](javascript:...)` in a class or
    variant name stays text (a bare `[bold]` stays as written)."""
    flat = MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))
    return flat.replace("](", "]\\(").replace("][", "]\\[")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md, r)) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<div class=scroll><table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _reproducibility(views: list[RunView], command: list[str] | None) -> list[str]:
    s0 = views[0].summary
    host = s0["host"]
    lines = [f"nnlab {s0['versions']['nnlab']}, torch {s0['versions']['torch']}, "
             f"Python {s0['versions']['python']}",
             f"hardware: {host.get('cpu') or host['machine']}, {host['cpu_threads']} CPU threads"
             + (f", GPU {host['cuda']}" if host.get("cuda") else "")
             + f"; device {s0['device']}",
             f"data: {_data_line(views)}",
             "data fingerprints (sha256 of the files read): " + ", ".join(sorted(
                 {v.config['task_info']['data']['fingerprint'] for v in views})),
             f"seeds: {sorted({v.config['config']['train']['seed'] for v in views})}, "
             f"split seed {views[0].config['config']['data']['split_seed']}"]
    if command:
        lines.append("report command: " + " ".join(command))
    for v in views:
        cmd = v.config.get("command")
        if cmd:
            lines.append(f"{v.name}: " + " ".join([os.path.basename(cmd[0]), *cmd[1:]])
                         + (f" (study config {v.variant['config_file']}, overrides "
                            f"{v.variant.get('overrides') or 'none'})"
                            if v.variant.get("config_file") else ""))
    lines.append(f"report written {datetime.now(UTC).isoformat(timespec='seconds')} on "
                 f"{platform.node() or 'this machine'} by nnlab {nnlab.__version__}")
    return lines


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;
padding-bottom:.2em}.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.8em 0;
font-size:.85em}th,td{border:1px solid #d0d0d0;padding:3px 6px;text-align:right;
white-space:nowrap}th:first-child,td:first-child{text-align:left}td:last-child{white-space:normal;
text-align:left;color:#6b4e00;font-style:italic;min-width:9em}table.plain td:last-child{font-style:normal;
color:inherit;text-align:right}th{background:#f3f3f5}tbody tr:nth-child(even){background:#fafafa}
img{max-width:100%}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));
gap:1em}code,pre{background:#f3f3f5;padding:1px 4px;font-size:.9em}pre{padding:.6em;
overflow-x:auto}.note{color:#555}details{margin:.4em 0}summary{cursor:pointer}
.best{font-weight:600}"""


def _claims_section(views: list[RunView], claims: list[Claim], task: type[Task]
                    ) -> tuple[list[str], list[list[str]], list[str]]:
    """Across seeds: per variant mean ± sd of the main metric (a table, when any variant ran
    more than once), each claim's measured effect, and where plateau schedules cut the lr."""
    metric, label = task.main_metric, task.label
    trained = [v for v in views if not v.baseline]
    scores = scores_by_variant([(str(v.variant.get("variant", v.name)), int(v.variant.get("seed", 0)),
                                 float(v.summary["val"][metric])) for v in trained])
    rows = seed_rows(scores) if any(len(s) > 1 for s in scores.values()) else []
    lines = [measure(c, scores, higher_is_better=task.higher_is_better).line(label(metric))
             for c in claims]
    cuts = []
    for v in trained:
        if v.config["config"]["schedule"]["name"] == "plateau":
            epochs = lr_cuts(v.history)
            cuts.append(f"{v.name}: " + (f"after epoch {', '.join(map(str, epochs))}" if epochs
                                          else "never"))
    if cuts:
        lines.append("The plateau schedule cut the learning rate (by its factor): " + "; ".join(cuts) + ".")
    return ["variant", "seeds", f"val {label(metric)} mean ± sd", "min", "max"], rows, lines


def build_report(run_paths: list[Path], out: Path, title: str, notes: list[str] | None = None,
                 names: list[str] | None = None, command: list[str] | None = None,
                 claims: list[Claim] | None = None, extra_sections: list[Section] | None = None,
                 figures: list[tuple[Path, str]] | None = None) -> Path:
    """Write out/report.md and out/report.html comparing the given runs; return the HTML path.
    `extra_sections` and `figures` (PNG in `out`, alt text): what the caller adds (a search's
    trials table, parameter importance and history plot) before the task's own tables."""
    if not run_paths:
        raise NnlabError("report: no run folders given")
    views = [read_run(p, n) for p, n in zip(run_paths, names or [None] * len(run_paths),
                                            strict=True)]
    names = {v.summary["task"] for v in views}
    if len(names) > 1:
        raise NnlabError(f"report: runs of different tasks ({', '.join(sorted(names))}) cannot "
                         "share one table; make one report per task")
    task = tasks.get(views[0].summary["task"], f"{views[0].run.path / 'summary.json'}: task")
    metric, label = task.main_metric, task.label
    trained = [v for v in views if not v.baseline]
    make_folder(out)  # a file in the way, no permission: one line naming the folder
    overlay = out / "curves_all.png"
    if trained:
        _overlay(trained, metric, overlay, label)
    header, rows, same = _rows(views, task)
    sections = [*(extra_sections or []), *task.report_sections([(v.name, v.val) for v in views])]
    seed_header, seed_table, claim_lines = _claims_section(views, claims or [], task)
    summaries = {v.name: _model_summary(v, task) for v in trained}
    repro = _reproducibility(views, command)
    notes = notes or []
    sign = 1 if task.higher_is_better else -1
    best = max(views, key=lambda v: sign * v.summary["val"].get(metric, -sign * float("inf")))
    headline = (f"Best on validation {label(metric)}: {best.name} "
                f"({best.summary['val'][metric]:.4f}).")
    caveat = ((f"All variants: {', '.join(same)}. " if same else "")
              + "Validation figures use each run's best epoch, picked on the validation split, "
              "which is carved from the training data (or is the data set's validation file); "
              "the test split is never used to choose anything.")

    md = [f"# {_md(title)}", "", _md(headline), "", *[f"{_md(n)}\n" for n in notes],
          _md_table(header, rows), "", _md(caveat), ""]
    if seed_table or claim_lines:
        md += ["## Claims and seeds", ""]
        md += [_md_table(seed_header, seed_table), ""] if seed_table else []
        md += [*[f"- {_md(line)}" for line in claim_lines], ""]
    for figure, alt in figures or []:
        md += [f"## {_md(alt.capitalize())}", "", f"![{_md(alt)}]({quote(figure.name)})", ""]
    if trained:
        md += ["## Training curves", "", f"![training curves of all variants]({overlay.name})", ""]
    for section in sections:
        md += [f"## {_md(section.title)}", "", _md_table(section.header, section.rows), ""]
    md += ["## Runs", ""]
    for v in views:
        md += [f"### {_md(v.name)}", "", f"run folder: {_md(v.run.path)}", ""]
        for png, _alt in _figures(v):
            if (v.run.plots / png).is_file():
                target = quote(os.path.relpath(v.run.plots / png, out))
                md.append(f"![{_md(v.name)} {png}]({target})")
        if v.name in summaries:
            h, r = summaries[v.name]
            md += ["", f"<details><summary>model: {html.escape(str(v.summary['model']))}, "
                   f"{v.summary['parameters']:,} parameters</summary>", "", _md_table(h, r), "",
                   "</details>"]
        md.append("")
    md += ["## Reproducibility", "", *[f"- {_md(line)}" for line in repro], ""]

    body = [f"<h1>{html.escape(title)}</h1>", f"<p class=best>{html.escape(headline)}</p>",
            *[f"<p class=note>{html.escape(n)}</p>" for n in notes],
            _html_table(header, rows), f"<p class=note>{html.escape(caveat)}</p>"]
    if seed_table or claim_lines:
        body.append("<h2>Claims and seeds</h2>")
        body += [_html_table(seed_header, seed_table, "plain")] if seed_table else []
        body += ["<ul>", *[f"<li>{html.escape(line)}</li>" for line in claim_lines], "</ul>"]
    for figure, alt in figures or []:
        body += [f"<h2>{html.escape(alt.capitalize())}</h2>", _img(figure, alt)]
    if trained:
        body += ["<h2>Training curves</h2>", _img(overlay, "training curves of all variants")]
    for section in sections:
        body += [f"<h2>{html.escape(section.title)}</h2>",
                 _html_table(section.header, section.rows, "plain")]
    body.append("<h2>Runs</h2>")
    for v in views:
        body += [f"<h3>{html.escape(v.name)}</h3>",
                 f"<p class=note>run folder: <code>{html.escape(str(v.run.path))}</code></p>"
                 "<div class=grid>"]
        for png, alt in _figures(v):
            if (v.run.plots / png).is_file():
                body.append(_img(v.run.plots / png, f"{v.name} {alt}"))
        body.append("</div>")
        if v.name in summaries:
            h, r = summaries[v.name]
            body += [f"<details><summary>model {html.escape(v.summary['model'])}: "
                     f"{v.summary['parameters']:,} parameters, layer table</summary>",
                     _html_table(h, r, "plain"), "</details>"]
    body += ["<h2>Reproducibility</h2><ul>",
             *[f"<li>{html.escape(line)}</li>" for line in repro], "</ul>"]
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
    atomic_write_texts({out / "report.md": "\n".join(md), out / "report.html": page})
    return out / "report.html"
