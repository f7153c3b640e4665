"""Tasks registered by name, like models; and where a task's data is found.

Everything that lists tasks (config checks, CLI help, data lookup, the demo) asks here, so a
new task is one module that subclasses `Task` and is decorated with `@register_task`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from nnlab.config import RunConfig, check_choices
from nnlab.data import GENERATED
from nnlab.data.download import downloaded_path
from nnlab.errors import NnlabError
from nnlab.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make the task known by its `name`."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} registered twice")
    _TASKS[cls.name] = cls
    return cls


def unregister_task(name: str) -> None:
    """Forget a task (tests that register their own)."""
    _TASKS.pop(name, None)


def names() -> list[str]:
    return list(_TASKS)


def get(name: object, where: str = "task") -> type[Task]:
    """The task class called `name`; a one-line error naming the known ones otherwise."""
    cls = _TASKS.get(name) if isinstance(name, str) else None
    if cls is None:
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise NnlabError(f"{where} {name!r}: unknown task (choose from {', '.join(names())}){hint}")
    return cls


def check_config(cfg: RunConfig, where: str = "task") -> type[Task]:
    """The config's task, once its choices (those of every task and the task's own) are valid."""
    task = get(cfg.task, where)
    check_choices(cfg, task.choices)
    return task


def find_data(task: type[Task], path: str | None) -> str | None:
    """The data path to use: `path` (or the generated set), else the task's folder below
    $NNLAB_DATA, else its download in the cache; None when nothing is found."""
    if path:
        if path == GENERATED:
            return task.generated_data()
        if not Path(path).exists():
            raise NnlabError(f"--data {path}: no such file or folder")
        return str(Path(path).resolve())
    root = os.environ.get("NNLAB_DATA")
    if root:
        for name in task.data_folders:
            candidate = Path(root) / name
            if candidate.exists():
                return str(candidate.resolve())
    if task.download and downloaded_path(task.download).is_file():
        return str(downloaded_path(task.download))
    return None


def require_data(task: type[Task], path: str | None) -> str:
    found = find_data(task, path)
    if found is None:
        hints = ["pass --data PATH", "set NNLAB_DATA"]
        if task.download:
            hints.append(f"run `nnlab data get {task.download}`")
        hints.append(f"use --data {GENERATED} (built-in generated data)")
        raise NnlabError(f"no {task.name} data found: {', '.join(hints[:-1])} or {hints[-1]}")
    return found
