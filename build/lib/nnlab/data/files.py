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
        if not (self.root.is_dir() or is_archive(self.root)):
            raise NnlabError(f"{self.root}: neither a folder nor a .tar/.tar.gz archive")
        self._blobs: dict[str, bytes] | None = None  # archive contents, read on first use
        self._listing: tuple[list[str], str] | None = None  # (names, lone-folder prefix)

    @property
    def is_archive(self) -> bool:
        return self.root.is_file()

    def _list(self) -> tuple[list[str], str]:
        if self._listing is None:
            if self.is_archive:
                self._blobs = self._read_archive(self.root)
                names = sorted(self._blobs)
            else:
                names = sorted(
                    str(PurePosixPath(Path(dirpath, f).relative_to(self.root)))
                    for dirpath, _, files in os.walk(self.root)
                    for f in files
                )
            names = [n for n in names if not _hidden(n)]
            prefix = self._lone_folder_prefix(names)
            self._listing = ([n[len(prefix) :] for n in names], prefix)
        return self._listing

    @property
    def prefix(self) -> str:
        return self._list()[1]

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
        return list(self._list()[0])

    def read(self, name: str) -> bytes:
        full = self.prefix + name
        if self.is_archive:
            assert self._blobs is not None
            return self._blobs[full]
        return (self.root / full).read_bytes()

    def describe(self, name: str) -> str:
        """How to name a file inside this tree in an error message."""
        if self.is_archive:
            return f"{self.root}:{self.prefix}{name}"
        return str(self.root / (self.prefix + name))

    def fingerprint(self) -> str:
        """A content key for the cache: archive bytes, or names, sizes and mtimes of a folder.

        An archive is hashed without being unpacked, so a cache hit costs one sequential read.
        """
        h = hashlib.sha256()
        if self.is_archive:
            with self.root.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            names, prefix = self._list()
            for name in names:
                st = (self.root / (prefix + name)).stat()
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
