"""Train, evaluate and predict with run folders: the steps the CLI and the demo share.

This is the middle floor: it ties config, data, tasks, the training loop and run folders
together, so `cli.py` only parses arguments and prints. Nothing here knows one task from
another: whatever differs is asked of the run's task (`nnlab.tasks`).
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from nnlab import config as config_mod
from nnlab import distributed, ensemble, models, tasks
from nnlab.config import RunConfig
from nnlab.device import Runtime, make_runtime
from nnlab.errors import NnlabError
from nnlab.runs import LAST, RunDir
from nnlab.tasks import Task
from nnlab.tasks.loading import load_model, load_run, open_run
from nnlab.train import EpochHook, Trainer


def resolve_config(task: str | None, model: str | None, config_file: str | None = None,
                   data: str | None = None, epochs: int | None = None,
                   sets: list[str] | None = None, embeddings: str | None = None) -> RunConfig:
    """defaults < model recipe < config file < --data/--epochs < --set, validated."""
    raw = config_mod.load_toml(config_file) if config_file else {}
    source = config_file or "config"
    kind = tasks.get(task or raw.get("task"))
    model = model or raw.get("model", {}).get("name")
    if not model:
        raise NnlabError(f"--model: required (models for {kind.name}: "
                         f"{', '.join(models.names(kind.name))})")
    entry = models.get(model, kind.name)
    cfg = RunConfig(task=kind.name)
    cfg.model.name = entry.name
    for key, value in entry.recipe.items():
        config_mod.set_value(cfg, key, value, f"recipe of {model}")
    config_mod.apply_nested(cfg, raw, source)
    cfg.task, cfg.model.name = kind.name, entry.name
    if data is not None:
        cfg.data.path = data
    if epochs is not None:
        cfg.train.epochs = epochs
    if embeddings is not None:
        if not kind.word_vectors:
            raise NnlabError(f"--embeddings: the {kind.name} task takes no word vectors")
        cfg.data.embeddings = embeddings
    given = [f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict)
             for key in values]
    for text in sets or []:
        key, value = config_mod.parse_assignment(text)
        config_mod.set_value(cfg, key, value)
        given.append(key)
    _check_read(kind, cfg, given, source)
    models.get(cfg.model.name, kind.name)  # --set model.name=... must name a model too
    models.check_args(cfg.model.name, kind.name, cfg.model.args, kind.supplied)  # before data is read
    tasks.registry.check_config(cfg)
    return cfg


def _check_read(kind: type[Task], cfg: RunConfig, given: list[str], source: str) -> None:
    """A task-specific key the user set (in a config file or with --set) that this task does
    not read would be silently ignored: refuse it, naming the key and the task. A key left at
    its default changes nothing and passes (a whole config, as `nnlab tune` writes, holds
    every key)."""
    default, task_keys = RunConfig(task=kind.name), config_mod.task_keys()
    for key in given:
        if key in task_keys and key not in kind.reads \
                and config_mod.get_value(cfg, key) != config_mod.get_value(default, key):
            readers = [t for t in tasks.names() if key in tasks.get(t).reads]
            raise NnlabError(f"{key}: not read by {kind.name} runs (it is a setting of "
                             f"{', '.join(readers) or 'no task'} runs); remove it from {source} or --set")


def train_run(cfg: RunConfig, out: str | Path, console: Console,
              source: Any = None, progress: bool = True, on_epoch: EpochHook | None = None
              ) -> dict[str, Any]:
    """Train a new run into `out`. Nothing is written until data and model are known good.

    Under torchrun every rank trains its shard; rank 0 alone writes the run folder."""
    d = distributed.current()
    kind = tasks.registry.check_config(cfg)
    RunDir.check_new(out)  # before the (slow) data loading
    distributed.barrier()  # every rank checked before rank 0 may create it
    if source is None:
        cfg.data.path = tasks.require_data(kind, cfg.data.path)
    runtime = make_runtime(cfg.train, models.is_conv(cfg.model.name))
    # the config records what `auto` chose on this host, so a resume elsewhere repeats it
    cfg.train.precision = runtime.precision
    cfg.train.channels_last = "on" if runtime.channels_last else "off"
    task = kind.for_training(cfg, runtime, source)
    run = RunDir(out)
    trainer, console = _trainer(cfg, task, runtime, run, console, progress, on_epoch)
    if not d.main:
        return trainer.fit()
    RunDir.create(out)  # only now, with data and model known good
    with run.lock():
        RunDir.check_new(out)  # again, holding the lock: another process may have started here
        run.write_config({
            "config": cfg.to_dict(), "task_info": task.info().to_json(),
            "command": sys.argv, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "world_size": d.world,
        })
        try:
            trainer.describe()
            return trainer.fit()
        except BaseException:
            # nothing to resume yet (failed or interrupted in the first epoch): remove the
            # folder this process made, so the same command can simply run again
            if not (run.path / LAST).exists():
                shutil.rmtree(run.path, ignore_errors=True)
            raise


def resume_run(out: str | Path, console: Console, progress: bool = True,
               on_epoch: EpochHook | None = None) -> dict[str, Any]:
    if distributed.current().main:
        run = RunDir.open(out)
        with run.lock():
            if run.finished:
                raise NnlabError(f"{run.path}: run already finished (summary.json exists)")
            run.remove_stale_temporaries()
            return _resume(run, console, progress, on_epoch)
    return _resume(RunDir(out), console, progress, on_epoch)


def _resume(run: RunDir, console: Console, progress: bool, on_epoch: EpochHook | None = None
            ) -> dict[str, Any]:
    main = distributed.current().main
    saved = distributed.broadcast(run.read_config() if main else None)  # other machines may not see it
    where = str(run.path / "config.json")
    cfg = config_mod.from_dict(saved["config"], where)
    kind = tasks.registry.check_config(cfg, f"{where}: task")
    runtime = make_runtime(cfg.train, models.is_conv(cfg.model.name))
    task = kind.for_training(cfg, runtime)
    if task.info().data.fingerprint != saved["task_info"]["data"]["fingerprint"]:
        raise NnlabError(f"{run.path}: the data at {saved['task_info']['data']['path']} changed "
                         "since the run started; resuming would not reproduce it")
    trainer, console = _trainer(cfg, task, runtime, run, console, progress, on_epoch)
    trainer.restore()
    return trainer.fit()


def _trainer(cfg: RunConfig, task: Task, runtime: Runtime, run: RunDir, console: Console,
             progress: bool, on_epoch: EpochHook | None = None) -> tuple[Trainer, Console]:
    """The trainer of a new or resumed run, once every rank agrees on the config (but the
    data's local path) and the data bytes; ranks other than 0 print nothing."""
    config = cfg.to_dict()
    config["data"] = {k: v for k, v in config["data"].items() if k != "path"}
    distributed.check_agreement({"config": config, "data": task.info().data.fingerprint})
    console = console if distributed.current().main else Console(quiet=True)
    return Trainer(task, cfg, runtime, run, console=console, progress=progress, on_epoch=on_epoch), console


def evaluate_run(path: str | Path, data: str | None = None, split: str | None = None,
                 device: str = "auto", tta: str | None = None) -> dict[str, Any]:
    """Metrics of the run's best weights on its validation split, or on other labelled data.

    Without --data: `val` (default) is the run's validation data, `test` its data's test
    part. With --data: `all` (default) every labelled example there (a file, or a data set's
    every part where the task can tell), `test` its test part, `val` its validation part.
    """
    if ensemble.is_ensemble(path):
        if tta is not None:
            raise NnlabError("--tta: an ensemble's members each evaluate with their run's own")
        return ensemble.load(path, device).evaluate(data, split)
    run, cfg, task, model = load_run(path, device)
    tta = tta or cfg.data.tta
    if tta not in task.tta_modes:
        raise NnlabError(f"--tta {tta}: not for {task.name} runs ({', '.join(task.tta_modes)})")
    split = split or ("all" if data else "val")
    examples, where = task.labelled(data, split)
    result = task.evaluate(model, task.prepare(examples, where), details=True, tta=tta)
    result |= task.evaluation_notes(examples, where)
    return result | {"run": str(run.path), "task": task.name, "model": cfg.model.name,
                     "data": where, "split": split}


def predict_run(path: str | Path, inputs: list[str], flags: dict[str, Any] | None = None,
                device: str = "auto") -> tuple[Task, list[dict[str, Any]]]:
    """The run's predictions on raw inputs (`nnlab predict`'s arguments, read by its task);
    `flags`: the options the user gave (`{"top_k": 5}`), checked against the task's own;
    an ensemble folder's members predict together."""
    if ensemble.is_ensemble(path):
        first = ensemble.first_task(path, device)
        options = first.predict_options.from_flags(first.name, flags or {})
        raw = first.read_inputs(inputs, options)  # told before any member is loaded
        combined = ensemble.load(path, device)
        return combined.task, combined.predict(raw, options)
    run, _cfg, task = open_run(path, device)
    options = task.predict_options.from_flags(task.name, flags or {})
    raw = task.read_inputs(inputs, options)  # a mistake in the inputs is told before any loading
    return task, task.predict(load_model(run, task), raw, options)
