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

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nnlab.errors import NnlabError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.safetensors"
SUMMARY = "summary.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class RunDir:
    """A run folder on disk. Creating one never overwrites a previous run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation and existence -------------------------------------------------------------
    @classmethod
    def check_new(cls, path: str | Path) -> None:
        """Fail unless `path` is free for a new run (missing or an empty folder)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            hint = "resume it with --resume" if (path / CONFIG).exists() else "pick another"
            raise NnlabError(f"{path}: folder exists and is not empty ({hint})")

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        cls.check_new(path)
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

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
        return self._read_json(CONFIG)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Rewrite metrics.jsonl atomically with one more line (it stays small: one per epoch)."""
        lines = [json.dumps(r) for r in self.read_metrics()] + [json.dumps(record)]
        atomic_write_text(self.path / METRICS, "\n".join(lines) + "\n")

    def truncate_metrics(self, epochs: int) -> None:
        """Drop epochs after `epochs`: they belong to a run killed before its checkpoint."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))

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
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NnlabError(f"{path}: missing") from None
        except json.JSONDecodeError as e:
            raise NnlabError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None

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
        path = self.path / LAST
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise NnlabError(f"{path}: unreadable checkpoint ({e})") from None

    @property
    def plots(self) -> Path:
        return self.path / "plots"
