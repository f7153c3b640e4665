"""A finished (or running) run folder read back: its config, its task rebuilt from the saved
task info, and its best weights checked and loaded. Below `experiment` (which trains, evaluates
and predicts) so that a task can load another run, as the similarity teacher does, without
an import cycle."""

from __future__ import annotations

from pathlib import Path

import torch

import nnlab.tasks.registry as registry
from nnlab import config as config_mod
from nnlab import models
from nnlab.config import RunConfig
from nnlab.device import make_runtime
from nnlab.errors import NnlabError
from nnlab.host import native_bf16
from nnlab.runs import RunDir
from nnlab.tasks.base import Task


def load_run(path: str | Path, device: str = "auto"
             ) -> tuple[RunDir, RunConfig, Task, torch.nn.Module]:
    """A run's folder, config, task (from its saved info) and best weights in eval mode."""
    run, cfg, task = open_run(path, device)
    return run, cfg, task, load_model(run, task)


def open_run(path: str | Path, device: str = "auto") -> tuple[RunDir, RunConfig, Task]:
    """A run's folder, config and task (from its saved info), on `device`; no weights read."""
    run = RunDir.open(path)
    saved = run.read_config()
    where = str(run.path / "config.json")
    cfg = config_mod.from_dict(saved["config"], where)
    kind = registry.check_config(cfg, f"{where}: task")
    cfg.train.device = device
    runtime = make_runtime(cfg.train, models.is_conv(cfg.model.name))
    if runtime.amp_dtype is not None and runtime.device.type == "cpu" and not native_bf16():
        cfg.train.precision = "fp32"  # trained in bf16 (a GPU, an AMX CPU): emulated here, 10x slower
        runtime = make_runtime(cfg.train, models.is_conv(cfg.model.name))
    # the saved info, field by field: a hand-edited mistake is one line naming it
    return run, cfg, kind.for_run(cfg, runtime, saved["task_info"], where)


def load_model(run: RunDir, task: Task) -> torch.nn.Module:
    """The run's best weights in its model, in eval mode on the task's device."""
    model = task.build_model()
    try:
        weights = run.load_best()
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise NnlabError(f"{run.path}: weights do not fit the model in config.json ({e})") from None
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NnlabError(f"{run.path}: the best weights hold NaN or infinite values ({name}); "
                             "the run diverged, and its predictions would be meaningless")
    runtime = task.runtime
    model.to(runtime.device, runtime.dtype).eval()
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
