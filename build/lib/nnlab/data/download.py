"""Download official archives into the cache, verified by sha256 before they are used."""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nnlab.data.cache import cache_dir
from nnlab.errors import NnlabError


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str
    filename: str


ARCHIVES = {
    # sha256 as published with Keras' and torchvision's CIFAR-10 loaders
    "cifar10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        filename="cifar-10-python.tar.gz",
    ),
}


def downloaded_path(name: str) -> Path:
    return cache_dir() / "downloads" / ARCHIVES[name].filename


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, timeout: float = 30.0) -> Path:
    """Download (once) and verify an archive; return its path in the cache."""
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
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise NnlabError(f"cannot download {archive.url} ({e}); pass --data PATH instead") from None
    digest = sha256_of(partial)
    if digest != archive.sha256:
        partial.unlink(missing_ok=True)
        raise NnlabError(f"{archive.url}: sha256 {digest} does not match {archive.sha256}")
    partial.replace(target)
    return target
