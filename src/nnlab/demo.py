"""`nnlab demo`: the quick budget of one study per task, and an index page of the three reports.

Each task uses its real data when found (a `--data` root laid out like `$NNLAB_DATA`:
`cifar10/`, `keyphrase/inspec/`, `sick/`; else `$NNLAB_DATA`; else the download cache),
otherwise the built-in generated data of that task, and says which. A task with an official
archive (images: CIFAR-10) and no copy found first downloads it when the machine is online
(`nnlab data get`, sha256-checked); offline, or with `--offline`, the demo says so and uses
the generated data. Studies
skip finished variants and resume interrupted ones, so a rerun continues where it stopped.
Sized for 2 CPU cores: a few minutes on the generated data.

With the `ray` extra installed and 2 or more cores, the runs of each study spread over one
local Ray worker per core, one thread each (`--workers 0`, the default): small models on
small batches keep one core busy each far better than they use two threads in one process.
`--workers 1` keeps every run here, one after another.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from nnlab import tasks
from nnlab.data import GENERATED, download
from nnlab.errors import NnlabError
from nnlab.executor import Resources
from nnlab.fileio import atomic_write_text
from nnlab.host import usable_cores
from nnlab.studies import data_label, load_study, run_study

DEMO_STUDIES = ("image-report-b", "keyphrase", "similarity")


def _data_for(task: str, root: str | None) -> str | None:
    """A task's data below a --data root (GENERATED forces the generated data)."""
    if root is None or root == GENERATED:
        return root
    if not Path(root).is_dir():
        raise NnlabError(f"--data {root}: no such folder (a folder holding cifar10/, "
                         "keyphrase/inspec/, sick/, or 'generated')")
    for name in tasks.get(task).data_folders:
        if (Path(root) / name).exists():
            return str(Path(root) / name)
    return GENERATED


CONNECT_TIMEOUT = 10.0  # seconds to reach the archive's host before falling back offline


def _download(task: str, console: Console) -> str | None:
    """The task's official archive (`nnlab data get`) when it has one and no copy of its data
    is found: its path once downloaded, the generated data (and a line saying why) when it
    cannot be fetched, None when nothing is to be fetched."""
    kind = tasks.get(task)
    if not kind.download or tasks.find_data(kind, None) is not None:
        return None
    archive = download.ARCHIVES[kind.download]
    console.print(f"No {task} data found: downloading {kind.download} ({archive.megabytes} MB, "
                  "sha256-checked; --offline skips this).")
    try:
        return str(download.fetch_with_bar(kind.download, console, timeout=CONNECT_TIMEOUT))
    except NnlabError as e:
        console.print(f"[yellow]Could not download {kind.download} ({escape(str(e))}): the {task} "
                      f"study uses generated data.[/]")
        return GENERATED


def demo_resources(workers: int) -> Resources:
    """`--workers`: 0 picks one worker per usable core when Ray is installed and no GPU is
    seen (Ray hides the GPUs from jobs that do not ask for one), else here."""
    if workers:
        return Resources(workers=workers, threads=1 if workers > 1 else 0)
    if torch.cuda.is_available():
        return Resources()
    cores = usable_cores()
    try:
        import ray  # noqa: F401
    except ImportError:
        return Resources()
    return Resources(workers=cores, threads=1) if cores >= 2 else Resources()


def run_demo(out: Path, data: str | None, console: Console, budget: str = "quick",
             offline: bool = False, resources: Resources | None = None) -> Path:
    resources = resources or Resources()
    if resources.ray:
        console.print(f"Runs spread over {resources.workers} local Ray workers, "
                      f"{resources.threads_per_job()} thread(s) each (--workers 1: one at a time, here).")
    reports = []
    for name in DEMO_STUDIES:
        study = load_study(name)
        console.rule(f"[bold]study {name}")
        where = _data_for(study.task, data)
        if data is None and not offline:  # online, a task's data comes from its archive
            where = _download(study.task, console) or where
        report = run_study(study, budget, where, out / name, console, resources=resources)
        reports.append((study, report))
    return _index(out, reports)


def _index(out: Path, reports: list) -> Path:
    """One page linking the studies' reports, with each one's best variant."""
    items, md = [], ["# nnlab demo", ""]
    for study, report in reports:
        meta = json.loads((report.parent / "study.json").read_text())
        best = (report.parent / "report.md").read_text().splitlines()[2]
        rel = os.path.relpath(report, out)
        data = data_label(meta["data"])
        items.append(f"<li><a href=\"{html.escape(rel)}\">{html.escape(study.title)}</a>"
                     f"<br><span>{html.escape(best)} Data: {html.escape(data)}.</span></li>")
        md.append(f"- [{study.title}]({os.path.relpath(report.with_suffix('.md'), out)}): "
                  f"{best} Data: {data}.")
    page = ("<!doctype html><html lang=en><head><meta charset=utf-8><title>nnlab demo</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;"
            "padding:0 1em;line-height:1.5}li{margin:.8em 0}span{color:#555}</style></head>"
            f"<body><h1>nnlab demo</h1><ul>{''.join(items)}</ul></body></html>\n")
    atomic_write_text(out / "index.md", "\n".join(md) + "\n")
    atomic_write_text(out / "index.html", page)
    return out / "index.html"
