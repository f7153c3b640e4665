"""Study suites: the variants of one comparison, trained alike and reported side by side.

A study is a TOML file in `experiments/studies/` listing variants, each a run config in
`experiments/<task>/` plus optional overrides per budget, and (for similarity) untrained
baselines. `quick` fits a 2-core CPU; `full` keeps every variant's own recipe (the reports'
epochs, for a GPU). Every variant gets the same data, split and seed, so differences in the
table come from the variants alone.

`run_study` trains each variant into OUT/runs/<variant>, skips finished ones and resumes
interrupted ones (a rerun continues the study), then writes OUT/report.html and report.md.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from nnlab import distributed, ensemble, tasks
from nnlab.claims import Claim
from nnlab.config import RunConfig, check_choices
from nnlab.data import GENERATED
from nnlab.device import make_runtime
from nnlab.errors import NnlabError
from nnlab.executor import Job as Run
from nnlab.executor import Resources, executor_for, require_ray
from nnlab.experiment import evaluate_run, resolve_config, resume_run, train_run
from nnlab.fileio import LOCK, atomic_write_json, folder_lock, make_folder, read_json
from nnlab.models import EXTRAS, check_extra
from nnlab.report import build_report
from nnlab.runs import RunDir, run_summary
from nnlab.tasks.base import Section, fmt

BUDGETS = ("quick", "cpu", "full")  # minutes a variant; the reports' claims on 2 cores; a GPU
STUDY_FILE = "study.json"  # in the study's output folder: what it was started with
VARIANT_FILE = "variant.json"  # in each run folder: its name and quoted figure in the study


@dataclass
class Variant:
    name: str
    config: Path  # the variant's run config (TOML)
    quoted: str = ""  # a published figure for this variant, quoted (not ours)
    budgets: dict[str, list[str]] = field(default_factory=dict)  # budget -> extra --set overrides
    requires: str = ""  # an optional extra the variant needs (minilm); skipped, with a note, without

    @property
    def folder(self) -> str:
        return slug(self.name)


@dataclass
class Baseline:
    name: str
    kind: str  # one of the task's `baselines` (similarity: glove-cosine, minilm-cosine)

    @property
    def folder(self) -> str:
        return slug(self.name)


@dataclass
class Study:
    name: str
    path: Path
    title: str
    task: str
    notes: list[str]
    budgets: dict[str, list[str]]  # budget -> --set overrides for every variant
    variants: list[Variant]
    baselines: list[Baseline]
    claims: list[Claim] = field(default_factory=list)  # the report's claims, measured over seeds

    def overrides(self, variant: Variant, budget: str) -> list[str]:
        return [*self.budgets.get(budget, []), *variant.budgets.get(budget, [])]


def slug(name: str) -> str:
    """A folder name for a variant name: "cnn + dropout" -> "cnn-dropout". Empty when the name
    has no letter or digit ("." or ".." must never name a folder: load_study refuses them)."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")


def experiments_roots() -> list[Path]:
    """Where studies are looked up: ./experiments (a user's own), then the ones shipped in
    the package (the repository's top-level experiments/ links to them)."""
    roots = [Path.cwd() / "experiments", Path(__file__).resolve().parent / "experiments"]
    roots = [r.resolve() for r in roots if r.is_dir()]
    return [r for i, r in enumerate(roots) if r not in roots[:i]]


def study_names() -> list[str]:
    return sorted({p.stem for root in experiments_roots() for p in (root / "studies").glob("*.toml")})


def find_study(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise NnlabError(f"{name}: no such study file")
        return path
    for root in experiments_roots():
        candidate = root / "studies" / f"{name}.toml"
        if candidate.is_file():
            return candidate
    raise NnlabError(f"study {name!r}: unknown (studies: {', '.join(study_names()) or 'none found'})")


def load_study(name: str) -> Study:
    """Read and check a study file; every variant config must exist and resolve."""
    path = find_study(name)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise NnlabError(f"{path}: not valid TOML ({e})") from None

    def need(table: dict, key: str, where: str, kind: type = str) -> Any:
        if key not in table:
            raise NnlabError(f"{path}: {where} has no `{key}`")
        if not isinstance(table[key], kind):
            raise NnlabError(f"{path}: {where}.{key} must be a {kind.__name__}")
        return table[key]

    def overrides(table: dict, where: str) -> dict[str, list[str]]:
        out = {}
        for budget in BUDGETS:
            sets = table.get(budget, [])
            if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
                raise NnlabError(f"{path}: {where}.{budget} must be a list of key=value strings")
            out[budget] = sets
        return out

    kind = tasks.get(need(raw, "task", "the study"), f"{path}: task")
    task = kind.name
    variants = []
    for i, v in enumerate(raw.get("variants", [])):
        where = f"variants[{i}]"
        config = path.parent.parent / need(v, "config", where)
        if not config.is_file():
            raise NnlabError(f"{path}: {where}.config: no such file {config}")
        requires = v.get("requires", "")
        if requires and requires not in EXTRAS:
            raise NnlabError(f"{path}: {where}.requires: unknown extra {requires!r} "
                             f"({', '.join(EXTRAS)})")
        variants.append(Variant(need(v, "name", where), config, v.get("quoted", ""),
                                overrides(v, where), requires))
    baselines = []
    for i, b in enumerate(raw.get("baselines", [])):
        scorer = need(b, "kind", f"baselines[{i}]")
        if scorer not in kind.baselines:
            raise NnlabError(f"{path}: baselines[{i}].kind {scorer!r} unknown for the {task} task "
                             f"({', '.join(kind.baselines) or 'it has none'})")
        baselines.append(Baseline(need(b, "name", f"baselines[{i}]"), scorer))
    if not variants:
        raise NnlabError(f"{path}: no [[variants]]")
    for named in [*variants, *baselines]:
        if not named.folder:
            raise NnlabError(f"{path}: variant name {named.name!r} has no letter or digit to name "
                             "its folder")
    folders = [v.folder for v in variants] + [b.folder for b in baselines]
    if len(set(folders)) != len(folders):
        raise NnlabError(f"{path}: two variants share a name (folders {folders})")
    claims = []
    names = {v.name for v in variants}
    for i, c in enumerate(raw.get("claims", [])):
        pairs = need(c, "pairs", f"claims[{i}]", list)
        if not pairs or not all(isinstance(p, list) and len(p) == 2 and set(p) <= names for p in pairs):
            raise NnlabError(f"{path}: claims[{i}].pairs must be [with, without] pairs of variant "
                             "names of this study")
        claims.append(Claim(need(c, "text", f"claims[{i}]"), tuple((a, b) for a, b in pairs)))
    return Study(path.stem, path, raw.get("title", path.stem), task, list(raw.get("notes", [])),
                 overrides(raw.get("budgets", {}), "budgets"), variants, baselines, claims)


def resolve_data(task: str, data: str | None, console: Console) -> str:
    """The study's data: --data, $NNLAB_DATA, the download cache, else the generated set."""
    kind = tasks.get(task)
    found = tasks.find_data(kind, data)
    if found is None:
        console.print(f"[yellow]No {task} data found (no --data, nothing in $NNLAB_DATA or the "
                      f"download cache): using the built-in generated {task} data.[/]")
        found = kind.generated_data()
    assert found is not None
    return found


@dataclass(frozen=True)
class Job:
    """One training run of a study: a variant at one seed (seed None: the config's own)."""
    variant: Variant
    seed: int | None

    @property
    def folder(self) -> str:
        return self.variant.folder if self.seed is None else f"{self.variant.folder}-seed{self.seed}"


def run_study(study: Study, budget: str, data: str | None, out: Path, console: Console,
              sets: list[str] | None = None, test: bool = False, progress: bool = True,
              seeds: list[int] | None = None, resources: Resources | None = None,
              ensembles: bool = False) -> Path:
    """Train (or resume, or skip) every variant (at every seed), run the baselines, write the
    report. `seeds`: each variant once per seed (`train.seed`), and every claim measured over
    them. `resources`: spread the runs over Ray workers (`nnlab.executor`); default: here.
    `ensembles`: each variant's seeds combined (`nnlab.ensemble`), a table in the report."""
    if budget not in BUDGETS:
        raise NnlabError(f"--budget {budget}: unknown (choose from {', '.join(BUDGETS)})")
    resources = resources or Resources()
    resources.check()
    if resources.ray:
        if distributed.launched():
            raise NnlabError("--workers/--ray-address: not under torchrun (each Ray job is one process)")
        require_ray()  # one line naming the extra, before any data is read
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0):
        raise NnlabError(f"--seeds {seeds}: give distinct seeds of 0 or more, e.g. 0,1,2")
    sets = list(sets or [])
    found = resolve_data(study.task, data, console)
    # seed by seed: a study stopped early still has every comparison at its first seeds
    jobs = [Job(v, s) for s in (seeds or [None]) for v in study.variants]
    folders = [j.folder for j in jobs] + [b.folder for b in study.baselines]
    if len(set(folders)) != len(folders):
        raise NnlabError(f"{study.path}: variant names collide with seed folders ({folders})")
    # every config is checked before anything is trained: a typo fails now, not after an hour
    configs = {j.folder: resolve_config(study.task, None, str(j.variant.config), data=found,
                                        sets=[*study.overrides(j.variant, budget), *sets,
                                              *([] if j.seed is None else [f"train.seed={j.seed}"])])
               for j in jobs}
    main = distributed.current().main  # under torchrun, rank 0 alone writes
    if main:
        make_folder(out)
    with folder_lock(out) if main else contextlib.nullcontext():  # one study process per folder
        if main:
            _claim_folder(out, study, budget, found, sets, seeds)
        distributed.barrier()
        return _run_variants(study, budget, found, out, console, jobs, configs, sets, test, progress,
                             resources, ensembles)


def _run_variants(study: Study, budget: str, found: str, out: Path, console: Console, jobs: list[Job],
                  configs: dict[str, RunConfig], sets: list[str], test: bool, progress: bool,
                  resources: Resources, ensembles: bool = False) -> Path:
    main = distributed.current().main
    notes = list(study.notes)
    for v in study.variants:
        if v.requires:
            try:
                check_extra(v.requires)
            except NnlabError as e:
                console.print(f"[yellow]{escape(v.name)}: skipped ({escape(str(e))})[/]")
                notes.append(f"Variant {v.name!r} skipped: {e}.")
                jobs = [j for j in jobs if j.variant.name != v.name]
    seeds = sorted({j.seed for j in jobs if j.seed is not None})
    console.print(f"[bold]{escape(study.title)}[/]: {len(study.variants)} variants"
                  f"{f' x {len(seeds)} seeds' if seeds else ''}, budget {budget}, data {escape(found)}"
                  + (f"; {resources.workers} workers" if resources.ray else ""))
    paths = [_variant_path(out, job.folder) for job in jobs]

    def record(job: Job, path: Path) -> None:  # the run's place in the study, beside it
        v = job.variant
        atomic_write_json(path / VARIANT_FILE, {
            "study": study.name, "variant": v.name, "quoted": v.quoted, "budget": budget,
            "config_file": str(v.config), "overrides": [*study.overrides(v, budget), *sets],
            "seed": configs[job.folder].train.seed, "seeded": job.seed is not None})

    if resources.ray:
        errors = _run_on_executor(jobs, paths, configs, resources, console, progress)
        failed = [(job, error) for job, error in zip(jobs, errors, strict=True) if error]
        for job, path in zip(jobs, paths, strict=True):
            if RunDir(path).finished:
                record(job, path)
        if failed:
            raise NnlabError(f"{len(failed)} of {len(jobs)} runs failed; first, {failed[0][0].folder}: "
                             f"{failed[0][1]} (rerun the command: finished runs are kept)")
    else:  # in this process (and under torchrun: every rank together, rank 0 writing)
        for job, path in zip(jobs, paths, strict=True):
            _run_here(job, path, configs[job.folder], console, progress)
            if main:
                record(job, path)
    if not main:
        return out / "report.html"
    rank = {v.name: i for i, v in enumerate(study.variants)}  # the report lists variant by variant
    paths = [p for _, p in sorted(zip(jobs, paths, strict=True), key=lambda jp: rank[jp[0].variant.name])]
    for b in study.baselines:
        path = _variant_path(out, b.folder)
        if not (path.is_dir() and RunDir(path).finished):
            try:
                run_baseline(study.task, b, found, path, console)
            except NnlabError as e:
                console.print(f"[yellow]{escape(b.name)}: skipped ({escape(str(e))})[/]")
                notes.append(f"Baseline {b.name!r} skipped: {e}.")
                continue
        paths.append(path)
    if test:
        with distributed.alone():
            _evaluate_test(paths, console, notes)
    notes.append(_budget_note(study, budget, found))
    sections = []
    if ensembles:
        with distributed.alone():
            sections = _ensembles_of_seeds(study, jobs, out, console, notes)
    report = build_report(paths, out, title=study.title, notes=notes,
                          command=["nnlab", *sys.argv[1:]] if sys.argv else None,
                          claims=study.claims, extra_sections=sections)
    return report


SELECT_STEPS = 12  # ensemble selection over every run of a study (nnlab.ensemble_select)


def _ensembles_of_seeds(study: Study, jobs: list[Job], out: Path, console: Console,
                        notes: list[str]) -> list[Section]:
    """Each variant's finished seeds as an ensemble in out/ensembles/<variant>, and the
    ensemble selected among all the study's finished runs in out/ensembles/selected, rewritten
    on every run; the report's table: each one's validation figure beside its members' mean
    and best (the selection's held-out estimate goes to the notes)."""
    kind = tasks.get(study.task)
    metric, rows = kind.main_metric, []

    def row(name: str, members: list[Path], folder: str, select: int = 0) -> dict | None:
        try:
            made = ensemble.create([str(p) for p in members], out / "ensembles" / folder,
                                   replace=True, select=select)
        except NnlabError as e:
            console.print(f"[yellow]{escape(name)}: no ensemble ({escape(str(e))})[/]")
            notes.append(f"No ensemble of {name!r}: {e}.")
            return None
        values = [m[metric] for m in made["members"]]
        rows.append([name, str(len(made["members"])), fmt(made[metric]), fmt(made["mean_member"]),
                     fmt(max(values) if kind.higher_is_better else min(values)),
                     f"{made['gain']:+.4f}", made["rule"]])
        return made

    every: list[Path] = []
    for v in study.variants:
        members = [_variant_path(out, j.folder) for j in jobs if j.variant.name == v.name]
        members = [p for p in members if RunDir(p).finished]
        every += members
        if len(members) >= 2:
            row(v.name, members, v.folder)
    if len(study.variants) > 1 and len(every) >= 3:
        made = row(f"selected among all {len(every)} runs", every, "selected", SELECT_STEPS)
        if made is not None:
            held = made["selection"]["crossfit"]
            notes.append(
                f"The selected ensemble (ensembles/selected) was chosen on validation by "
                f"{SELECT_STEPS} steps of forward selection, so its figure above flatters it. "
                f"Chosen on one half of validation and judged on the other, both ways: selected "
                f"{fmt(held['selected'])}, every run equally {fmt(held['all_equal'])}, the best run "
                f"{fmt(held['best_run'])}.")
    if not rows:
        return []
    return [Section(f"Ensembles of each variant's seeds (validation {kind.label(metric)})",
                    ["variant", "runs", "ensemble", "mean member", "best member",
                     "gain over the mean", "rule"], rows)]


def _label(job: Job) -> str:
    return job.variant.name if job.seed is None else f"{job.variant.name} (seed {job.seed})"


def _run_here(job: Job, path: Path, cfg: RunConfig, console: Console, progress: bool) -> None:
    """One job in this process (every rank under torchrun), trained, resumed or skipped."""
    main = distributed.current().main
    state = None
    if main:  # rank 0 sees the study folder; the others follow its reading
        state = ("finished" if path.is_dir() and RunDir(path).finished
                 else "resume" if (path / "last.pt").is_file() else "new")
        if state == "new" and path.exists():  # started, but no epoch finished: start again
            shutil.rmtree(path)
    state = distributed.broadcast(state)
    if state == "finished":
        console.print(f"[dim]{escape(_label(job))}: already finished, skipped[/]")
        return
    console.rule(escape(_label(job)))
    if state == "resume":
        resume_run(path, console, progress)
    else:
        train_run(cfg, path, console, progress=progress)


def _run_on_executor(jobs: list[Job], paths: list[Path], configs: dict[str, RunConfig],
                     resources: Resources, console: Console, progress: bool) -> list[str]:
    """Every job on Ray workers (see `nnlab.executor`); '' or why each failed."""
    executor = executor_for(resources, console, progress)
    try:
        done = executor.run_all([Run(_label(j), p, configs[j.folder])
                                 for j, p in zip(jobs, paths, strict=True)])
    finally:
        executor.close()
    return [d.error for d in done]


def _variant_path(out: Path, folder: str) -> Path:
    """`out/runs/<folder>`, checked to lie directly in `out/runs`: the study deletes and
    replaces folders there, and must never reach another variant's or anything outside."""
    runs = (out / "runs").resolve()
    path = runs / folder
    if not folder or folder in (".", "..") or path.resolve().parent != runs:
        raise NnlabError(f"variant folder {folder!r}: not a folder name inside {out / 'runs'}")
    return out / "runs" / folder


def _claim_folder(out: Path, study: Study, budget: str, data: str, sets: list[str],
                  seeds: list[int] | None = None) -> None:
    """A study folder holds one study at one budget on one data set (and seeds): a rerun must
    match. The claims are kept beside, so `nnlab report DIR` can measure them again."""
    meta = {"study": study.name, "budget": budget, "data": data, "sets": sets, "seeds": seeds}
    file = out / STUDY_FILE
    if file.is_file():
        saved = read_json(file)
        differs = [k for k in meta if saved.get(k) != meta[k]]
        if differs:
            raise NnlabError(f"{out}: holds study {saved.get('study')!r} (budget "
                             f"{saved.get('budget')}, data {saved.get('data')}, sets "
                             f"{saved.get('sets')}); this run differs in {', '.join(differs)}: "
                             "pass another --out")
        return
    if out.exists() and any(p.name != LOCK for p in out.iterdir()):
        raise NnlabError(f"{out}: folder exists, is not empty and holds no study: pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, meta | {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                                    "command": ["nnlab", *sys.argv[1:]],
                                    "claims": [c.to_dict() for c in study.claims]})


def data_label(data: str) -> str:
    return "the built-in generated data" if "/generated/" in data or data == GENERATED else data


def _budget_note(study: Study, budget: str, data: str) -> str:
    what = data_label(data)
    common = ", ".join(study.budgets.get(budget, [])) or "none"
    extra = "; ".join(f"{v.name}: {', '.join(v.budgets[budget])}"
                      for v in study.variants if v.budgets.get(budget))
    return (f"Budget {budget} on {what}. Overrides for every variant: {common}"
            + (f"; per variant: {extra}." if extra else "."))


def _evaluate_test(paths: list[Path], console: Console, notes: list[str]) -> None:
    """Each finished run's best weights on the data's test split, into eval/test.json.

    Only reported: nothing (epoch, offset, variant) is chosen on it.
    """
    for path in paths:
        if (path / "eval" / "test.json").is_file() or _is_baseline(path):
            continue
        try:
            result = evaluate_run(path, split="test")
        except NnlabError as e:
            console.print(f"[yellow]test split: {escape(str(e))}[/]")
            notes.append(f"No test figures: {e}.")
            return
        bulky = tasks.get(result["task"]).detail_keys
        atomic_write_json(path / "eval" / "test.json", {k: v for k, v in result.items() if k not in bulky})


def _is_baseline(path: Path) -> bool:
    summary = path / "summary.json"
    return summary.is_file() and read_json(summary).get("kind") == "baseline"


def run_baseline(task: str, b: Baseline, data: str, path: Path, console: Console) -> None:
    """Score an untrained baseline on the study's validation examples, as a run folder."""
    kind = tasks.get(task)
    cfg = RunConfig(task=task)  # the default data options: the variants' split
    cfg.data.path = data
    check_choices(cfg, kind.choices)
    used = kind(cfg, make_runtime(cfg.train), {})
    source = used.load_source(data)
    console.rule(escape(b.name))
    start = time.perf_counter()
    result = kind.baselines[b.kind](source.val)
    seconds = time.perf_counter() - start
    metrics = {k: v for k, v in result.items() if k not in kind.detail_keys}
    cfg_dict = cfg.to_dict()
    cfg_dict["model"] = {"name": b.kind, "args": {}}
    info = {"data": {"path": source.path, "format": source.format,
                     "fingerprint": source.fingerprint, "train_examples": len(source.train),
                     "val_examples": len(source.val)}}
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run = RunDir.create(tmp)
    run.write_config({"config": cfg_dict, "task_info": info, "baseline": b.kind,
                      "command": ["nnlab", *sys.argv[1:]],
                      "created": datetime.now(UTC).isoformat(timespec="seconds")})
    atomic_write_json(tmp / "eval" / "val.json", result)
    used.write_plots(run.plots, result, b.name)
    run.write_summary(run_summary(task, b.kind, kind.main_metric) | {
        "kind": "baseline", "best_epoch": None, "epochs_run": 0, "train_seconds": 0.0,
        "eval_seconds": seconds, f"{kind.unit}_per_s": None, "parameters": 0, "val": metrics})
    atomic_write_json(tmp / VARIANT_FILE, {"variant": b.name, "quoted": "", "baseline": b.kind})
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    console.print(f"{escape(b.name)}: validation {kind.label(kind.main_metric)} "
                  f"{metrics[kind.main_metric]:.4f} ({seconds:.1f} s)")
