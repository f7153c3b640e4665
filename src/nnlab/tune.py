"""`nnlab tune`: a recipe search. Optuna samples each trial's settings (TPE, seeded), every
trial trains as an ordinary run folder on the study executor (here, or Ray workers), and
weak trials stop early on their per-epoch validation metric (Optuna's pruners).

Why Optuna drives Ray tasks rather than Ray Tune with its Optuna searcher: a trial here is
exactly a study job (one run folder, resumable, locked), so the executor that spreads studies
runs trials unchanged, with its retries and resume; the driver alone talks to Optuna's
storage (a worker only posts epoch figures and reads the pruning verdict), so workers on
other machines need no database access; and the search needs only the `ray` core, not
Ray Tune's dependencies. The cost: pruning decisions travel through the driver (tens of
milliseconds an epoch).

The search lives in DIR: `tune.json` (what it searches; a rerun must match), `tune.db` (the
Optuna study, SQLite; `--storage URL` puts it in a shared database instead, e.g. PostgreSQL,
for several drivers), `trials/trial-NNNN` (one run folder each), `best.toml` (the best
trial's config: `nnlab train --config DIR/best.toml` reruns it) and the report. A rerun of an
interrupted search keeps its finished trials and resumes the ones that were running.

With a shared `--storage`, each driver has its own DIR (it holds the lock on it) and beats a
heartbeat for its running trials (Optuna's RDBStorage heartbeat). A trial whose driver died
stops beating; the next driver to look marks it failed and runs its settings again as a new
trial in its own folder (Optuna's retry callback), so no trial of a dead driver
stays RUNNING forever and none of a live driver is taken over.

Selection is on validation only: a trial's value is its best epoch's validation metric.
`--test` evaluates the best trial on the test split once, at the very end.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from nnlab import models, plots, tasks
from nnlab.config import RunConfig, check_choices
from nnlab.errors import NnlabError, short
from nnlab.executor import Done, Job, Resources, executor_for
from nnlab.experiment import evaluate_run
from nnlab.fileio import atomic_write_json, atomic_write_text, folder_lock, make_folder, read_json
from nnlab.report import build_report
from nnlab.search_space import Param, apply, parse_space, toml_value
from nnlab.tasks import Section

PRUNERS = ("median", "hyperband", "asha", "none")
STUDY_NAME = "nnlab-tune"
TUNE_FILE = "tune.json"


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise NnlabError("tune: needs the extra: pip install 'nnlab[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class Search:
    """What one `nnlab tune` searches, as given on the command line."""

    base: RunConfig  # the fixed settings: the model's recipe, --config, --set, --epochs
    params: list[Param]
    trials: int
    seed: int = 0
    pruner: str = "median"
    storage: str | None = None
    heartbeat: int = 60  # seconds between a driver's heartbeats in a shared --storage

    def key(self) -> dict[str, Any]:
        """What a rerun in the same folder must match."""
        return {"base": self.base.to_dict(), "space": [p.describe() for p in self.params],
                "seed": self.seed, "pruner": self.pruner}


def make_search(base: RunConfig, space: list[str], trials: int, seed: int, pruner: str,
                storage: str | None, heartbeat: int = 60) -> Search:
    require_optuna()
    if not 1 <= trials <= 100_000:
        raise NnlabError(f"--trials: from 1 to 100,000, got {trials}")
    if not 1 <= heartbeat <= 3600:
        raise NnlabError(f"--heartbeat: from 1 to 3,600 seconds, got {heartbeat}")
    if pruner not in PRUNERS:
        raise NnlabError(f"--pruner {pruner}: unknown (one of {', '.join(PRUNERS)})")

    def check(cfg: RunConfig) -> None:
        check_choices(cfg, tasks.get(cfg.task).choices)
        models.check_args(cfg.model.name, cfg.task, cfg.model.args, tasks.get(cfg.task).supplied)

    return Search(base, parse_space(space, base, check), trials, seed, pruner, storage, heartbeat)


def _storage(optuna: Any, search: Search, out: Path) -> Any:
    """The folder's own SQLite study, or the shared `--storage` with heartbeats: a trial whose
    driver stopped beating for 3 beats is failed and its settings queued again (at most twice)."""
    if search.storage is None:
        return f"sqlite:///{(out / 'tune.db').resolve()}"
    from optuna import storages

    beats = {"heartbeat_interval": search.heartbeat, "grace_period": 3 * search.heartbeat}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna 4.9 renamed it
            retry = storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
            return storages.RDBStorage(search.storage, heartbeat_stale_trial_callback=retry, **beats)
        return storages.RDBStorage(search.storage, **beats,
                                   failed_trial_callback=storages.RetryFailedTrialCallback(max_retry=2))


def _pruner(optuna: Any, name: str, epochs: int) -> Any:
    """Stop a trial whose validation metric trails: the median of the trials' at the same
    epoch (Optuna's MedianPruner), Hyperband, or ASHA (successive halving, asynchronous)."""
    p = optuna.pruners
    if name == "median":
        return p.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, epochs // 4))
    if name == "hyperband":
        return p.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "asha":
        return p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return p.NopPruner()


def _claim(out: Path, search: Search) -> None:
    file = out / TUNE_FILE
    key = search.key()
    if file.is_file():
        saved = read_json(file)
        differs = [k for k in key
                   if json.dumps(saved.get(k), sort_keys=True) != json.dumps(key[k], sort_keys=True)]
        if differs:
            raise NnlabError(f"{out}: holds another search (it differs in {', '.join(differs)}): pass "
                             "another --out")
        return
    if any(p.name not in (".lock",) for p in out.iterdir()):
        raise NnlabError(f"{out}: folder exists, is not empty and holds no search: pass another --out")
    atomic_write_json(file, key | {"task": search.base.task, "model": search.base.model.name,
                                   "trials": search.trials, "command": ["nnlab", *sys.argv[1:]],
                                   "started": datetime.now(UTC).isoformat(timespec="seconds")})


def run_search(search: Search, out: Path, resources: Resources, console: Console,
               progress: bool = True, test: bool = False) -> Path:
    """Run (or continue) the search; write best.toml and the report; return the report."""
    optuna = require_optuna()
    kind = tasks.get(search.base.task)
    metric = kind.main_metric
    make_folder(out)
    with folder_lock(out):
        _claim(out, search)
        try:
            study = optuna.create_study(
                study_name=STUDY_NAME, storage=_storage(optuna, search, out), load_if_exists=True,
                direction="maximize" if kind.higher_is_better else "minimize",
                pruner=_pruner(optuna, search.pruner, search.base.train.epochs))
        except ImportError:  # SQLAlchemy finds no driver for the URL's database
            raise NnlabError(f"--storage {search.storage}: no Python driver for this database is "
                             "installed (PostgreSQL: pip install 'psycopg[binary]')") from None
        except Exception as e:  # a storage URL that does not answer
            raise NnlabError(f"--storage {search.storage or out / 'tune.db'}: cannot open the Optuna "
                             f"study ({short(e, 200)})") from None
        # seeded by the history as well: a resumed search samples anew, not the first trials again
        study.sampler = optuna.samplers.TPESampler(seed=search.seed + len(study.trials),
                                                   n_startup_trials=min(8, search.trials))
        _search(optuna, study, search, out, resources, console, progress)
        best = _write_best(study, search, out, metric)
        report = _report(study, search, out, kind, console)
        if test and best is not None:
            _test_once(out, best, console)
    return report


def _trial_path(out: Path, number: int) -> Path:
    return out / "trials" / f"trial-{number:04d}"


def _search(optuna: Any, study: Any, search: Search, out: Path, resources: Resources, console: Console,
            progress: bool) -> None:
    from optuna.trial import TrialState

    distributions = {p.key: p.distribution() for p in search.params}
    running: dict[str, Any] = {}  # job name -> optuna trial (ask/tell)
    executor = executor_for(resources, console, progress)
    width = executor.capacity  # trials in flight: each new one is sampled knowing the finished

    def hook(name: str, record: dict[str, Any]) -> bool:
        trial = running[name]
        value = record.get(f"val_{tasks.get(search.base.task).main_metric}")
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        epoch = int(record["epoch"])
        if epoch not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(float(value), epoch)  # a resumed trial replays epochs past its checkpoint
        return bool(trial.should_prune())

    executor.hook = hook

    def submit(trial: Any) -> None:
        name = f"trial {trial.number}"
        running[name] = trial
        params = {k: trial.params[k] for k in distributions}
        executor.submit(Job(name, _trial_path(out, trial.number), apply(search.base, params)))

    beats = _Heartbeat(study, running, search.heartbeat) if search.storage else None
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for Study.optimize: here the driver beats them
        # itself (_Heartbeat), for the trials it hands to the executor
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        try:
            if search.storage is None:
                # the folder's own study, locked by this driver: trials still RUNNING were left by a
                # killed driver and resume from their run folders (last.pt). In a shared --storage
                # they may belong to another live driver: left to it while it beats its heartbeat.
                for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    submit(optuna.trial.Trial(study, frozen._trial_id))
            while True:
                _fail_stale(study, search)  # a dead driver's trials: failed, their settings queued
                started = _started(study)  # in all drivers, a queued retry in place of its failure
                while started < search.trials and len(running) < width:
                    submit(study.ask(distributions))  # a queued retry first, with its settings
                    started += 1
                if not running:
                    break
                for done in executor.wait():
                    _tell(optuna, study, running.pop(done.job.name), done)
        finally:
            if beats is not None:
                beats.stop()
            executor.close()


def _fail_stale(study: Any, search: Search) -> None:
    """In a shared --storage: fail the trials whose driver stopped beating (Optuna queues
    their settings again). The folder's own SQLite study has no other driver to fail."""
    if search.storage is None:
        return
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _started(study: Any) -> int:
    """Trials begun so far, in all drivers: finished, pruned, failed or running; a failed trial
    whose settings were queued again counts once, through its retry."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in retried)


class _Heartbeat:
    """Beats the heartbeat of this driver's running trials in a shared storage, from a thread:
    a trial's epochs may take longer than the grace period, its driver is alive all the same."""

    def __init__(self, study: Any, running: dict[str, Any], interval: int) -> None:
        self.study, self.running, self.interval = study, running, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="nnlab-tune-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        storage = self.study._storage
        while not self.done.is_set():
            for trial in self.running.copy().values():  # copy: the driver adds and pops
                with contextlib.suppress(Exception):  # a trial told meanwhile; a storage hiccup
                    storage.record_heartbeat(trial._trial_id)
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def _tell(optuna: Any, study: Any, trial: Any, done: Done) -> None:
    from optuna.trial import TrialState

    if done.summary is None:
        study.tell(trial, state=TrialState.FAIL)
        return
    metric = done.summary["main_metric"]
    trial.set_user_attr("run", str(done.job.path))
    trial.set_user_attr("epochs_run", done.summary.get("epochs_run"))
    if done.summary.get("pruned"):
        study.tell(trial, state=TrialState.PRUNED)
        return
    study.tell(trial, float(done.summary["val"][metric]))


def _write_best(study: Any, search: Search, out: Path, metric: str) -> Path | None:
    """best.toml: the best finished trial's whole config, which `nnlab train --config` reruns."""
    import tomli_w

    try:
        best = study.best_trial
    except ValueError:  # no trial finished unpruned
        return None
    cfg = apply(search.base, {p.key: best.params[p.key] for p in search.params})
    header = (f"# nnlab tune: the best of {len(study.trials)} trials (trial {best.number}), validation "
              f"{metric} {best.value:.4f}\n# rerun: nnlab train --config {out / 'best.toml'} --out RUN_DIR\n")
    atomic_write_text(out / "best.toml", header + tomli_w.dumps(toml_value(cfg.to_dict())))
    return Path(best.user_attrs.get("run", _trial_path(out, best.number)))


def _test_once(out: Path, best: Path, console: Console) -> None:
    result = evaluate_run(best, split="test")
    bulky = tasks.get(result["task"]).detail_keys
    atomic_write_json(out / "best_test.json", {k: v for k, v in result.items() if k not in bulky})
    for line in tasks.get(result["task"]).format_evaluation(result):
        console.print(escape(line))


def trial_rows(study: Any, search: Search, label: Any) -> tuple[list[str], list[list[str]]]:
    header = ["trial", *[p.key.replace("model.args.", "model.") for p in search.params],
              label, "epochs run", "state"]
    rows = []
    for t in study.trials:
        value = "-" if t.value is None else f"{t.value:.4f}"
        if t.state.name == "PRUNED" and t.intermediate_values:
            value = f"({max(t.intermediate_values.values()):.4f})" if study.direction.name == "MAXIMIZE" \
                else f"({min(t.intermediate_values.values()):.4f})"
        params = [f"{v:.3g}" if isinstance(v, float) else str(v)
                  for v in (t.params.get(p.key) for p in search.params)]
        rows.append([str(t.number), *params, value, str(t.user_attrs.get("epochs_run", "-")),
                     t.state.name.lower()])
    return header, rows


def _report(study: Any, search: Search, out: Path, kind: Any, console: Console) -> Path:
    metric, label = kind.main_metric, kind.label(kind.main_metric)
    header, rows = trial_rows(study, search, f"validation {label}")
    sections = [Section("Trials", header, rows)]
    notes = [f"Search: {len(study.trials)} trials of {search.base.model.name}; TPE (seed {search.seed}), "
             f"pruner {search.pruner}; space: {'; '.join(p.describe() for p in search.params)}. "
             "A pruned trial's figure in parentheses is its best epoch before it was stopped."]
    try:
        import optuna

        importance = optuna.importance.get_param_importances(study)
        sections.append(Section("Parameter importance (fANOVA)", ["parameter", "importance"],
                                [[k.replace("model.args.", "model."), f"{v:.3f}"]
                                 for k, v in importance.items()]))
    except (RuntimeError, ValueError) as e:  # too few finished trials
        notes.append(f"No parameter importance: {e}")
    history = out / "search_history.png"
    plots.search_history([(t.number, t.value, t.state.name) for t in study.trials], history,
                         f"validation {label}", kind.higher_is_better)
    runs = [Path(t.user_attrs["run"]) for t in study.trials if t.user_attrs.get("run")
            and (Path(t.user_attrs["run"]) / "summary.json").is_file()]
    if not runs:
        raise NnlabError(f"{out}: no trial finished; nothing to report")
    report = build_report(runs, out, f"nnlab tune: {search.base.model.name} ({kind.name})", notes=notes,
                          command=["nnlab", *sys.argv[1:]], extra_sections=sections,
                          figures=[(history, "search history")])
    try:
        best = study.best_trial
        console.print(f"best: trial {best.number}, validation {metric} {best.value:.4f}; "
                      f"{escape(', '.join(f'{k}={v}' for k, v in best.params.items()))}")
    except ValueError:
        console.print("no trial finished unpruned")
    return report
