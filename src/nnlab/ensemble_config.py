"""`nnlab ensemble --config FILE --data PATH --out DIR`: an ensemble written down as member
recipes and seeds. Members missing under `DIR/members/` are trained by the study executor
(here, or on Ray workers with `--workers`), finished ones are reused, a killed one resumes;
then the ensemble is written in DIR itself, so `nnlab evaluate DIR` takes it.

    task = "keyphrase"
    rule = "mean-emissions"          # optional: the task's first rule
    select = 10                      # optional: choose members and weights among the runs by
                                     # 10 steps of forward selection on validation (no `weight`)

    [[members]]
    recipe = "best.toml"             # a run config, relative to this file
    seeds = [0, 1, 2, 3, 4]
    weight = 1.0                     # optional: per run of this recipe
    set = ["train.epochs=15"]        # optional: --set overrides
    name = "best-long"               # optional: the runs' folder names (default: the recipe's),
                                     # for one recipe listed twice with other overrides
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from nnlab import ensemble
from nnlab.config import load_toml
from nnlab.errors import NnlabError
from nnlab.executor import Job, Resources, executor_for
from nnlab.experiment import resolve_config
from nnlab.fileio import LOCK, folder_lock, make_folder
from nnlab.runs import CONFIG

TOP_KEYS = {"task", "rule", "select", "members"}
MEMBER_KEYS = {"recipe", "seeds", "weight", "set", "name"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class MemberRecipe:
    recipe: Path
    seeds: list[int]
    weight: float
    sets: list[str]
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.recipe.stem


def read(path: str | Path) -> tuple[str, str | None, int, list[MemberRecipe]]:
    """(task, rule, selection steps, member recipes) of an ensemble file; one line for the
    first mistake."""
    path = Path(path)
    raw = load_toml(path)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise NnlabError(f"{path}: unknown key {unknown[0]!r} (an ensemble file holds "
                         f"{', '.join(sorted(TOP_KEYS))})")
    task, rule, members = raw.get("task"), raw.get("rule"), raw.get("members")
    if not isinstance(task, str):
        raise NnlabError(f"{path}: `task` must name the members' task")
    if rule is not None and not isinstance(rule, str):
        raise NnlabError(f"{path}: `rule` must be a string")
    select = raw.get("select", 0)
    if isinstance(select, bool) or not isinstance(select, int) or select < 0:
        raise NnlabError(f"{path}: `select` must be a whole number of selection steps")
    if not isinstance(members, list) or not members:
        raise NnlabError(f"{path}: no [[members]] tables")
    found = []
    for i, m in enumerate(members, start=1):
        where = f"{path}: members #{i}"
        extra = sorted(set(m) - MEMBER_KEYS) if isinstance(m, dict) else []
        if not isinstance(m, dict) or extra:
            raise NnlabError(f"{where}: unknown key {extra[0]!r}" if extra else f"{where}: a table")
        recipe, seeds = m.get("recipe"), m.get("seeds", [0])
        weight, sets = m.get("weight", 1.0), m.get("set", [])
        if not isinstance(recipe, str) or not (path.parent / recipe).is_file():
            raise NnlabError(f"{where}: recipe {recipe!r} is not a file beside {path.name}")
        if not isinstance(seeds, list) or not seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise NnlabError(f"{where}: seeds must be a list of whole numbers >= 0")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise NnlabError(f"{where}: weight must be a number > 0")
        if select and "weight" in m:
            raise NnlabError(f"{where}: `select` chooses the weights; give no weight beside it")
        if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
            raise NnlabError(f"{where}: set must be a list of \"key=value\" strings")
        name = m.get("name")
        if name is not None and not (isinstance(name, str) and NAME.fullmatch(name)):
            raise NnlabError(f"{where}: name must be letters, digits, '.', '_' or '-' (a folder name)")
        found.append(MemberRecipe(path.parent / recipe, list(seeds), float(weight), list(sets), name))
    if sum(len(m.seeds) for m in found) < 2:
        raise NnlabError(f"{path}: an ensemble needs two runs or more")
    return task, rule, select, found


def build(path: str | Path, data: str | None, out: str | Path, resources: Resources,
          console: Console, progress: bool = True, device: str = "auto") -> dict[str, Any]:
    """Train the missing members, then write (or rewrite) the ensemble in `out`."""
    task, rule, select, recipes = read(path)
    folder = Path(out)
    if folder.exists() and any(p.name not in ("members", ensemble.FILE, ensemble.SUMMARY, LOCK)
                               for p in folder.iterdir()):
        raise NnlabError(f"{folder}: holds other files than an ensemble's; pick another --out")
    if (folder / CONFIG).exists():
        raise NnlabError(f"{folder}: a run folder; pick another --out")
    jobs, weights = [], []
    for m in recipes:
        for seed in m.seeds:
            cfg = resolve_config(task, None, str(m.recipe), data=data,
                                 sets=[f"train.seed={seed}", *m.sets])
            jobs.append(Job(f"{m.label}-seed{seed}", folder / "members" / f"{m.label}-seed{seed}", cfg))
            weights.append(m.weight)
    folders = [j.path for j in jobs]
    twice = next((p for i, p in enumerate(folders) if p in folders[:i]), None)
    if twice is not None:
        raise NnlabError(f"{path}: two members would train into {twice}; give each [[members]] "
                         "table its own `name`, or a seed once")
    make_folder(folder)
    with folder_lock(folder):  # one build per folder; each member run holds its own lock too
        executor = executor_for(resources, console, progress)
        try:
            done = executor.run_all(jobs)
        finally:
            executor.close()
        failed = next((d for d in done if d.summary is None), None)
        if failed is not None:
            raise NnlabError(f"{failed.job.path}: training failed ({failed.error}); rerun to go on")
        return ensemble.create([str(p) for p in folders], folder, None if select else weights,
                               rule, device, replace=True, select=select)
