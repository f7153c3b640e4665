"""Find a task's data: --data PATH, else $NNLAB_DATA, else the download cache."""

from __future__ import annotations

import os
from pathlib import Path

from nnlab.data.download import downloaded_path
from nnlab.data.generated_text import generated_text_folder
from nnlab.data.images import GENERATED
from nnlab.errors import NnlabError

# where each task's data usually lives below $NNLAB_DATA
TASK_FOLDERS = {"image": ("cifar10", "cifar-10-batches-py", "cifar-10-batches-bin"),
                "keyphrase": ("keyphrase/inspec", "inspec"),
                "similarity": ("sick",)}
DOWNLOADS = {"image": "cifar10"}


def find_data(task: str, path: str | None) -> str | None:
    """The data path to use, or None when nothing is found (the caller decides what then)."""
    if path:
        if path == GENERATED:  # images are drawn in memory; text is written in the real formats
            return path if task == "image" else str(generated_text_folder(task))
        if not Path(path).exists():
            raise NnlabError(f"--data {path}: no such file or folder")
        return str(Path(path).resolve())
    root = os.environ.get("NNLAB_DATA")
    if root:
        for name in TASK_FOLDERS.get(task, ()):
            candidate = Path(root) / name
            if candidate.exists():
                return str(candidate.resolve())
    download = DOWNLOADS.get(task)
    if download and downloaded_path(download).is_file():
        return str(downloaded_path(download))
    return None


def require_data(task: str, path: str | None) -> str:
    found = find_data(task, path)
    if found is None:
        hints = ["pass --data PATH", "set NNLAB_DATA"]
        if task in DOWNLOADS:
            hints.append(f"run `nnlab data get {DOWNLOADS[task]}`")
        hints.append(f"use --data {GENERATED} (built-in generated data)")
        raise NnlabError(f"no {task} data found: {', '.join(hints[:-1])} or {hints[-1]}")
    return found
