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

from nnlab.errors import NnlabError, short

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# archives are read into memory: a member may hold a CIFAR batch (31 MB) or a large photo, and
# all of them together CIFAR-10 many times over, but not a decompression bomb
MAX_MEMBER_BYTES = 256 << 20
MAX_ARCHIVE_BYTES = 4 << 30


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
        """Every regular member's bytes (nothing is extracted to disk). Sizes are checked from
        the headers before reading: a small .tar.gz can unpack to gigabytes."""
        blobs: dict[str, bytes] = {}
        total = 0
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    total += member.size
                    if member.size > MAX_MEMBER_BYTES or total > MAX_ARCHIVE_BYTES:
                        what = (f"member {short(member.name)} holds {member.size:,} bytes"
                                if member.size > MAX_MEMBER_BYTES else
                                f"members add up to more than {MAX_ARCHIVE_BYTES:,} bytes")
                        raise NnlabError(f"{path}: {what}; nnlab reads members up to "
                                         f"{MAX_MEMBER_BYTES:,} bytes and archives up to "
                                         f"{MAX_ARCHIVE_BYTES:,} (unpack it and pass the folder)")
                    f = tar.extractfile(member)
                    if f is not None:
                        blobs[str(PurePosixPath(member.name))] = f.read(member.size)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise NnlabError(f"{path}: unreadable archive ({short(e)})") from None
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
        """A content key for the cache and for resume's "same data" check: the archive's bytes,
        or every file's name and bytes in a folder (names, sizes and mtimes alone let two
        different folders load each other's pixels). The 50,000 JPEGs of CIFAR-10 as a folder
        hash in about a second (benchmarks/data_fingerprint.py), against a minute to decode.
        """
        h = hashlib.sha256()
        if self.is_archive:
            with self.root.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            names, prefix = self._list()
            for name in names:
                data = (self.root / (prefix + name)).read_bytes()
                h.update(f"{name}\0{len(data)}\n".encode())
                h.update(data)
        return h.hexdigest()
