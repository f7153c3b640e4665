"""The run folder: everything needed to understand, resume, evaluate and report a run.

    RUN_DIR/
      config.json        resolved RunConfig (plus what the task learnt: classes, image shape)
      metrics.jsonl      one JSON object per finished epoch
      last.pt            full checkpoint: model, optimiser, scheduler, RNG states, epoch
      best.safetensors   weights of the best epoch on the validation split
      summary.json       written once, when training has finished
      plots/             training curves, confusion matrix

Every file is written to a temporary name and renamed into place, so a killed process
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import nnlab
from nnlab.device import Runtime
from nnlab.errors import NnlabError, short
from nnlab.fileio import (
    LOCK,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    folder_lock,
    make_folder,
    read_json,
)
from nnlab.host import cpu_name

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.safetensors"
SUMMARY = "summary.json"
CHECKPOINT_KEYS = ("epoch", "step", "best", "best_epoch", "bad_epochs", "train_seconds", "model",
                   "optimizer", "scheduler", "rng")


def run_summary(task: str, model: str, main_metric: str, runtime: Runtime | None = None
                ) -> dict[str, Any]:
    """The fields every summary.json starts with, trained run or untrained baseline alike:
    what ran, where, with which versions (`runtime` None: a CPU baseline in fp32)."""
    import platform


    return {
        "task": task, "model": model, "main_metric": main_metric,
        "device": str(runtime.device) if runtime else "cpu",
        "precision": runtime.precision if runtime else "fp32",
        "channels_last": bool(runtime and runtime.channels_last),
        "versions": {"nnlab": nnlab.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "host": {"cpu_threads": torch.get_num_threads(), "machine": platform.machine(),
                 "cpu": cpu_name(),
                 "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }


class RunDir:
    """A run folder on disk. Creating one never overwrites a previous run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation and existence -------------------------------------------------------------
    @classmethod
    def check_new(cls, path: str | Path) -> None:
        """Fail unless `path` is free for a new run (missing or an empty folder) and could be
        made: checked before the (slow) data loading, so a typo costs nothing."""
        path = Path(path)
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise NnlabError(f"{path}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise NnlabError(f"{path}: cannot create the folder ({parent} is not writable)")
        if path.exists() and (not path.is_dir() or any(p.name != LOCK for p in path.iterdir())):
            hint = "resume it with --resume" if (path / CONFIG).exists() else "pick another"
            what = "folder exists and is not empty" if path.is_dir() else "a file is in the way"
            raise NnlabError(f"{path}: {what} ({hint})")

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """Make the (missing or empty) folder; `lock()` it, then `check_new` again."""
        cls.check_new(path)
        run = cls(path)
        make_folder(run.path)
        return run

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this folder's writer lock while training, resuming or running a study in it."""
        with folder_lock(self.path):
            yield

    def remove_stale_temporaries(self) -> None:
        """Delete the `.NAME.*.tmp` files a process killed inside `atomic_write` left (call
        with the lock held: no other writer can be half-way through one)."""
        for tmp in self.path.rglob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.path.is_dir():
            raise NnlabError(f"{run.path}: no such run folder")
        if not (run.path / CONFIG).is_file():
            raise NnlabError(f"{run.path}: not a run folder (no {CONFIG})")
        return run

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).is_file()

    # -- config, metrics, summary -----------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.path / CONFIG, config)

    def read_config(self) -> dict[str, Any]:
        """config.json, checked for the two objects every reader needs."""
        saved = self._read_json(CONFIG)
        for key in ("config", "task_info"):
            if not isinstance(saved.get(key), dict):
                raise NnlabError(f"{self.path / CONFIG}: not an nnlab run config (no `{key}` object)")
        return saved

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Rewrite metrics.jsonl atomically with one more line (it stays small: one per epoch)."""
        lines = [json.dumps(r, allow_nan=False) for r in [*self.read_metrics(), record]]
        atomic_write_text(self.path / METRICS, "\n".join(lines) + "\n")

    def truncate_metrics(self, epochs: int) -> None:
        """Drop epochs after `epochs`: they belong to a run killed before its checkpoint."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.exists():
            return []
        records = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise NnlabError(f"{path}:{lineno}: not JSON ({e.msg})") from None
        return records

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY, summary)

    def read_summary(self) -> dict[str, Any]:
        return self._read_json(SUMMARY)

    def _read_json(self, name: str) -> dict[str, Any]:
        return read_json(self.path / name)

    # -- weights and checkpoints ------------------------------------------------------------
    def save_best(self, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        atomic_write(self.path / BEST, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def load_best(self) -> dict[str, torch.Tensor]:
        path = self.path / BEST
        if not path.is_file():
            raise NnlabError(f"{path}: missing (the run has not finished an epoch yet)")
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise NnlabError(f"{path}: unreadable weights ({e})") from None

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        atomic_write(self.path / LAST, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, read with `weights_only=True`: tensors, numbers, strings and
        containers only, so a crafted file cannot run code (it is refused instead)."""
        path = self.path / LAST
        if not path.is_file():
            return None
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            # torch's message is a page that ends by suggesting an unsafe load: quote the
            # line that names what was refused (an "Unsupported global"), else its first line
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            reason = next((line for line in lines if "Unsupported" in line), lines[0])
            raise NnlabError(f"{path}: unreadable or unsafe checkpoint ({short(reason)})") from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
        if missing:
            raise NnlabError(f"{path}: not an nnlab checkpoint (missing {', '.join(missing)})")
        return checkpoint

    @property
    def plots(self) -> Path:
        return self.path / "plots"
