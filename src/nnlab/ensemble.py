"""Finished runs combined into one model: `nnlab ensemble RUN RUN ... --out DIR`.

An ensemble folder holds `ensemble.json` (the members' paths, the sha256 of each member's
config.json and best.safetensors, their weights, the task and the combination rule) and
`summary.json` (its validation figures beside its members'). It never copies weights: a
member that changed or moved after the ensemble was written is refused in one line when the
ensemble is loaded.

Each member computes its outputs on its own encoding of the same examples (so a MiniLM tagger
and a GloVe BiLSTM-CRF, or a cross-encoder and a Siamese LSTM, combine), and the first
member's task combines them by the rule and judges or presents the result
(tasks.capabilities.Ensemblable; the rules are documented beside each task's hooks).
Members must have trained on the same data and split, so the validation figures stay honest:
no member has seen another's validation examples.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nnlab import ensemble_select
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write_json, make_folder, read_json
from nnlab.runs import BEST, CONFIG, RunDir
from nnlab.tasks.base import PredictOptions, Task
from nnlab.tasks.capabilities import Ensemblable, require
from nnlab.tasks.loading import load_model, open_run

FILE = "ensemble.json"
SUMMARY = "summary.json"
VERSION = 1
HASHED = (CONFIG, BEST)  # what decides a member's predictions


@dataclass
class Member:
    """One loaded member run."""

    run: RunDir
    task: Task
    model: torch.nn.Module
    weight: float


@dataclass
class Ensemble:
    """Loaded members and how they combine; the first member's task speaks for all."""

    path: Path
    rule: str
    members: list[Member]

    @property
    def task(self) -> Task:
        return self.members[0].task

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]

    @property
    def name(self) -> str:
        models = sorted({m.task.cfg.model.name for m in self.members})
        return f"ensemble of {len(self.members)} ({', '.join(models)}; {self.rule})"

    def member_outputs(self, examples: Any, where: str) -> tuple[list[Any], Any]:
        """Every member's outputs on labelled examples (each on its own encoding of them), and
        the first member's prepared examples, whose labels judge them all."""
        outputs, gold = [], None
        for m in self.members:
            prepared = m.task.prepare(examples, where)
            gold = gold if gold is not None else prepared
            outputs.append(m.task.outputs(m.model, prepared))  # type: ignore[attr-defined]
        return outputs, gold

    def evaluate(self, data: str | None = None, split: str | None = None, details: bool = True,
                 alone: bool = True) -> dict[str, Any]:
        """The ensemble's figures on labelled data (`nnlab evaluate`'s choices of data and
        split), beside each member's on the same examples and the gain over their mean
        (`alone`: judge each member too; without, only the ensemble's own cost is paid)."""
        split = split or ("all" if data else "val")
        examples, where = self.task.labelled(data, split)
        outputs, gold = self.member_outputs(examples, where)
        return self.judged(outputs, gold, examples, where, split, details, alone)

    def judged(self, outputs: list[Any], gold: Any, examples: Any, where: str, split: str,
               details: bool, alone: bool = True, figures: list[float] | None = None
               ) -> dict[str, Any]:
        """`evaluate`'s result from the members' outputs on `examples` (`figures`: the
        members' own main figures, when already judged)."""
        task = self.task
        result = task.judge(task.combine(outputs, self.weights, self.rule),  # type: ignore[attr-defined]
                            gold, details)
        result |= task.evaluation_notes(examples, where)
        result |= {"run": str(self.path), "task": task.name, "model": self.name, "rule": self.rule,
                   "data": where, "split": split}
        if not alone:
            return result
        metric = task.main_metric
        if figures is None:
            figures = [task.judge(out, gold)[metric] for out in outputs]  # type: ignore[attr-defined]
        mean = sum(figures) / len(figures)
        result["members"] = [{"run": str(m.run.path), "model": m.task.cfg.model.name,
                              "seed": m.task.cfg.train.seed, "weight": m.weight, metric: value}
                             for m, value in zip(self.members, figures, strict=True)]
        result["mean_member"] = mean
        result["gain"] = (result[metric] - mean) * (1 if task.higher_is_better else -1)
        return result

    def predict(self, inputs: list[Any], options: PredictOptions) -> list[dict]:
        """Predictions on raw inputs (`read_inputs`' or a served request's)."""
        outputs = [m.task.input_outputs(m.model, inputs) for m in self.members]  # type: ignore[attr-defined]
        task = self.task
        return task.present(task.combine(outputs, self.weights, self.rule),  # type: ignore[attr-defined]
                            inputs, options)


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / FILE).is_file()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the files that decide a run's predictions."""
    hashes = {}
    for name in HASHED:
        digest = hashlib.sha256()
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        hashes[name] = digest.hexdigest()
    return hashes


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """`--weights 2,1,1`, checked: one number > 0 per run (None without it)."""
    if text is None:
        return None
    try:
        raw = [float(w) for w in text.split(",")]
    except ValueError:
        raise NnlabError(f"--weights {text}: numbers separated by commas, one per run") from None
    if len(raw) != count:
        raise NnlabError(f"--weights {text}: {len(raw)} weights for {count} runs")
    if not all(math.isfinite(w) and w > 0 for w in raw):
        raise NnlabError(f"--weights {text}: every weight must be a number > 0")
    return raw


def _load_member(path: str | Path, device: str, weight: float) -> Member:
    if is_ensemble(path):
        raise NnlabError(f"{path}: an ensemble, not a run; give its members' run folders")
    run, _cfg, task = open_run(path, device)
    if not run.finished:
        raise NnlabError(f"{run.path}: the run has not finished (no summary.json); ensembles "
                         "combine finished runs")
    require(task, Ensemblable)
    return Member(run, task, load_model(run, task), weight)


def _check_members(members: list[Member]) -> None:
    """One line for the first member that cannot join the first one."""
    first = members[0]
    key, data = first.task.ensemble_key(), first.task.info().data  # type: ignore[attr-defined]
    split = (first.task.cfg.data.val_size, first.task.cfg.data.split_seed)
    seen = {first.run.path.resolve()}
    for m in members[1:]:
        where = m.run.path
        if m.run.path.resolve() in seen:
            raise NnlabError(f"{where}: given twice; each member is a different run")
        seen.add(m.run.path.resolve())
        if m.task.name != first.task.name:
            raise NnlabError(f"{where}: a {m.task.name} run; the first member is a "
                             f"{first.task.name} run")
        theirs = m.task.ensemble_key()  # type: ignore[attr-defined]
        for field, value in key.items():
            if theirs.get(field) != value:
                raise NnlabError(f"{where}: its {field} differ from the first member's "
                                 f"({_short(theirs.get(field))} against {_short(value)})")
        if m.task.info().data.fingerprint != data.fingerprint:
            raise NnlabError(f"{where}: trained on other data than the first member "
                             f"({m.task.info().data.path} against {data.path}); its validation "
                             "examples could be another member's training examples")
        if (m.task.cfg.data.val_size, m.task.cfg.data.split_seed) != split:
            raise NnlabError(f"{where}: another validation split (data.val_size, "
                             "data.split_seed) than the first member's")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def create(runs: list[str], out: str | Path, weights: list[float] | None = None,
           rule: str | None = None, device: str = "auto", replace: bool = False,
           select: int = 0) -> dict[str, Any]:
    """Check, combine and write an ensemble folder; its validation figures (returned) in
    summary.json. `weights`: one per run, > 0 (equal without; normalised to sum to 1).
    `select`: that many steps of ensemble selection on the validation split choose the
    members and their weights among `runs` instead (nnlab.ensemble_select).
    `replace`: `out` may exist and its ensemble files are rewritten (an ensemble file's
    members live inside it)."""
    if len(runs) < 2:
        raise NnlabError("ensemble: give at least two runs")
    if select and weights:
        raise NnlabError("--select chooses the weights; give no --weights beside it")
    if select:
        ensemble_select.check_steps(select, len(runs))
    if not replace:
        RunDir.check_new(out)
    weights = weights or [1.0] * len(runs)
    fractions = [w / sum(weights) for w in weights]
    members = [_load_member(r, device, w) for r, w in zip(runs, fractions, strict=True)]
    _check_members(members)
    rules = members[0].task.ensemble_rules  # type: ignore[attr-defined]
    rule = rule or rules[0]
    if rule not in rules:
        raise NnlabError(f"--rule {rule}: not for {members[0].task.name} runs ({', '.join(rules)})")
    folder = Path(out)
    ensemble = Ensemble(folder, rule, members)
    # judged before anything is written: a failure leaves nothing
    if select:
        ensemble, result = _selected(ensemble, select)
    else:
        result = ensemble.evaluate(details=False)
    make_folder(folder)
    atomic_write_json(folder / FILE, {
        "nnlab_ensemble": VERSION, "task": ensemble.task.name, "rule": rule,
        "members": [{"path": os.path.relpath(m.run.path.resolve(), folder.resolve()),
                     "absolute": str(m.run.path.resolve()), "weight": m.weight,
                     "model": m.task.cfg.model.name, "sha256": file_hashes(m.run.path)}
                    for m in ensemble.members]})
    atomic_write_json(folder / SUMMARY, {"val": result, "model": ensemble.name})
    return result


def _selected(candidates: Ensemble, steps: int) -> tuple[Ensemble, dict[str, Any]]:
    """The ensemble chosen among `candidates` by `steps` of forward selection on the
    validation split, and its figures with the selection's record (the candidates' figures,
    the curve, and the held-out estimate on halves of the split)."""
    task, rule = candidates.task, candidates.rule
    metric, higher = task.main_metric, task.higher_is_better
    examples, where = task.labelled(None, "val")
    ensemble_select.check_examples(len(examples), where)
    outputs, gold = candidates.member_outputs(examples, where)

    def judged(outs: list[Any], data: Any, counts: list[int]) -> float:
        used = [i for i, c in enumerate(counts) if c]
        combined = task.combine([outs[i] for i in used],  # type: ignore[attr-defined]
                                ensemble_select.weights_of([counts[i] for i in used]), rule)
        return task.judge(combined, data)[metric]  # type: ignore[attr-defined]

    parts: dict[tuple[int, ...], tuple[list[Any], Any]] = {}

    def part(indices: list[int]) -> tuple[list[Any], Any]:  # each half cut once
        key = tuple(indices)
        if key not in parts:
            cut = [task.part(o, gold, indices) for o in outputs]  # type: ignore[attr-defined]
            parts[key] = ([c[0] for c in cut], cut[0][1])
        return parts[key]

    def select_on(indices: list[int]) -> ensemble_select.Selection:
        outs, data = part(indices)
        return ensemble_select.greedy(len(outputs), lambda c: judged(outs, data, c), steps, higher)

    estimate = ensemble_select.crossfit(len(gold), lambda i, c: judged(*part(i), c), len(outputs),
                                        select_on, higher)
    selection = ensemble_select.greedy(len(outputs), lambda c: judged(outputs, gold, c), steps,
                                       higher)
    weights = ensemble_select.weights_of(selection.counts)
    chosen = selection.chosen
    members = [candidates.members[i] for i in chosen]
    for i, m in zip(chosen, members, strict=True):
        m.weight = weights[i]
    ensemble = Ensemble(candidates.path, rule, members)
    singles = [task.judge(o, gold)[metric] for o in outputs]  # type: ignore[attr-defined]
    result = ensemble.judged([outputs[i] for i in chosen], gold, examples, where, "val", False,
                             figures=[singles[i] for i in chosen])
    result["selection"] = {
        "steps": steps, "chosen": len(chosen), "counts": selection.counts,
        "curve": selection.curve, "picks": selection.picks, "crossfit": estimate,
        "candidates": [{"run": str(m.run.path), "model": m.task.cfg.model.name,
                        "seed": m.task.cfg.train.seed, metric: value}
                       for m, value in zip(candidates.members, singles, strict=True)]}
    return ensemble, result


def _read(folder: Path) -> tuple[dict[str, Any], list[Any]]:
    """The ensemble file and its members' entries, checked for version and members."""
    where = folder / FILE
    saved = read_json(where)
    members_raw = saved.get("members")
    if saved.get("nnlab_ensemble") != VERSION or not isinstance(members_raw, list) or not members_raw:
        raise NnlabError(f"{where}: not an nnlab ensemble file (version {VERSION}, one member or "
                         "more)")
    return saved, members_raw


def _member_folder(folder: Path, raw: Any, i: int) -> Path:
    """Member `i`'s run folder (its path relative to the ensemble, else its absolute one)."""
    where = folder / FILE
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), t) for k, t in (
            ("path", str), ("absolute", str), ("weight", float), ("sha256", dict))):
        raise NnlabError(f"{where}: member {i} should hold path, absolute, weight and sha256")
    if not (math.isfinite(raw["weight"]) and raw["weight"] > 0):
        raise NnlabError(f"{where}: member {i}'s weight must be a number > 0")
    run = folder / raw["path"]
    if not (run / CONFIG).is_file():
        run = Path(raw["absolute"])
    if not (run / CONFIG).is_file():
        raise NnlabError(f"{where}: member {i} is gone ({raw['absolute']})")
    return run


def first_task(path: str | Path, device: str = "auto") -> Task:
    """The task of an ensemble's first member, no model loaded: `predict` reads its inputs
    with it, so a mistake in them is told before any member is loaded."""
    folder = Path(path)
    return open_run(_member_folder(folder, _read(folder)[1][0], 1), device)[2]


def load(path: str | Path, device: str = "auto") -> Ensemble:
    """An ensemble folder's members loaded, each checked against the sha256 it was written with."""
    folder = Path(path)
    where = folder / FILE
    saved, members_raw = _read(folder)
    members = []
    for i, raw in enumerate(members_raw, start=1):
        run = _member_folder(folder, raw, i)
        now = file_hashes(run)
        changed = [name for name in HASHED if now[name] != raw["sha256"].get(name)]
        if changed:
            raise NnlabError(f"{run}: changed after the ensemble {folder} was written ({changed[0]} "
                             "sha256 differs); write the ensemble again")
        members.append(_load_member(run, device, raw["weight"]))
    total = sum(m.weight for m in members)
    for m in members:  # fractions, whatever a hand-edited file holds
        m.weight /= total
    _check_members(members)
    rule = saved.get("rule")
    if rule not in members[0].task.ensemble_rules:  # type: ignore[attr-defined]
        raise NnlabError(f"{where}: rule {rule!r} is not one of the task's")
    return Ensemble(folder, rule, members)


def summary(path: str | Path) -> dict[str, Any]:
    file = Path(path) / SUMMARY
    return read_json(file) if file.is_file() else {}
