"""Download official archives into the cache, verified by sha256 before they are used."""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnlab.data.cache import kind_dir
from nnlab.errors import NnlabError


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str
    filename: str
    megabytes: int = 0  # its size, for the user's information


ARCHIVES = {
    # sha256 as published with Keras' and torchvision's CIFAR-10 loaders
    "cifar10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        filename="cifar-10-python.tar.gz",
        megabytes=170,
    ),
}


def downloaded_path(name: str) -> Path:
    return kind_dir("downloads") / ARCHIVES[name].filename


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def fetch(name: str, timeout: float = 30.0, progress: Progress | None = None) -> Path:
    """Download (once) and verify an archive; return its path in the cache. `timeout`: for
    connecting and each read; `progress` is called after each MiB."""
    if name not in ARCHIVES:
        raise NnlabError(f"unknown data set {name!r} (known: {', '.join(ARCHIVES)})")
    archive = ARCHIVES[name]
    target = downloaded_path(name)
    if target.is_file() and sha256_of(target) == archive.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(archive.url, timeout=timeout) as response, partial.open("wb") as f:
            length = response.headers.get("Content-Length")
            total, done = (int(length) if length and length.isdigit() else None), 0
            while chunk := response.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise NnlabError(f"cannot download {archive.url} ({e}); pass --data PATH instead") from None
    digest = sha256_of(partial)
    if digest != archive.sha256:
        partial.unlink(missing_ok=True)
        raise NnlabError(f"{archive.url}: sha256 {digest} does not match {archive.sha256}")
    partial.replace(target)
    return target


def fetch_with_bar(name: str, console, timeout: float = 30.0) -> Path:  # console: rich Console
    """`fetch` with a progress bar on the console (MiB, speed, time left)."""
    from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = (*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"downloading {name}", total=None)
        return fetch(name, timeout, lambda done, total: bar.update(task, completed=done, total=total))
