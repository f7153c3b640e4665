"""A read-only view of the files of a folder or a tar archive, by relative POSIX path.

Every image format reads through this, so a folder and the same folder packed in a
`.tar`/`.tar.gz` behave the same, and a lone top-level folder (`cifar-10-batches-py/`,
`train/` in an archive of a single split) is looked through.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path, PurePosixPath

from nnlab.errors import NnlabError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


class FileTree:
    """Files below `root` (a folder or an archive); `read(name)` returns a file's bytes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.exists():
            raise NnlabError(f"{self.root}: no such file or folder")
        if self.root.is_dir():
            entries = [e for e in self.root.iterdir() if not e.name.startswith(".")]
            if len(entries) == 1 and is_archive(entries[0]):
                self.root = entries[0]  # a folder that only holds the archive
        self._blobs: dict[str, bytes] | None = None
        if self.root.is_dir():
            self._names = sorted(
                str(PurePosixPath(Path(dirpath, f).relative_to(self.root)))
                for dirpath, _, files in os.walk(self.root)
                for f in files
            )
        elif is_archive(self.root):
            self._blobs = self._read_archive(self.root)
            self._names = sorted(self._blobs)
        else:
            raise NnlabError(f"{self.root}: neither a folder nor a .tar/.tar.gz archive")
        self._names = [n for n in self._names if not _hidden(n)]
        self.prefix = self._lone_folder_prefix(self._names)
        if self.prefix:
            self._names = [n[len(self.prefix) :] for n in self._names]

    @staticmethod
    def _read_archive(path: Path) -> dict[str, bytes]:
        blobs: dict[str, bytes] = {}
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if member.isfile():
                        f = tar.extractfile(member)
                        if f is not None:
                            blobs[str(PurePosixPath(member.name))] = f.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise NnlabError(f"{path}: unreadable archive ({e})") from None
        return blobs

    @staticmethod
    def _lone_folder_prefix(names: list[str]) -> str:
        """Strip top-level folders for as long as everything sits in exactly one of them."""
        prefix = ""
        while names:
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1 or any("/" not in n for n in names):
                break
            top = tops.pop() + "/"
            prefix += top
            names = [n[len(top) :] for n in names]
        return prefix

    def names(self) -> list[str]:
        return list(self._names)

    def read(self, name: str) -> bytes:
        full = self.prefix + name
        if self._blobs is not None:
            return self._blobs[full]
        return (self.root / full).read_bytes()

    def describe(self, name: str) -> str:
        """How to name a file inside this tree in an error message."""
        if self._blobs is not None:
            return f"{self.root}:{self.prefix}{name}"
        return str(self.root / (self.prefix + name))

    def fingerprint(self) -> str:
        """A content key for the cache: archive bytes, or names, sizes and mtimes of a folder."""
        h = hashlib.sha256()
        if self.root.is_file():
            with self.root.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            for name in self._names:
                st = (self.root / (self.prefix + name)).stat()
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(self.prefix.encode())
        return h.hexdigest()
