"""What the cache holds and how to shrink it: `nnlab cache info` and `nnlab cache clean`.

An entry is one top-level item of a kind's folder (a file, or a folder such as a generated
data set) whose name nnlab gives such entries (`cache.ENTRY_NAMES`), in a kind folder nnlab
created; anything else there is not nnlab's and is neither counted nor removed (see
`nnlab.data.cache`). Its last use is the newest modification time inside it (`cache.touch` on
every hit). Files being written (`*.tmp`, `*.part`) are left alone unless a day old: a killed
process left them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nnlab.data.cache import KINDS, cache_dir, is_entry_name, is_marked_kind, is_marked_root
from nnlab.errors import NnlabError

IN_PROGRESS = (".tmp", ".part")
STALE_SECONDS = 24 * 3600  # an unfinished write this old belongs to no live process
DEFAULT_CLEAN = ("images", "contextual", "teacher", "generated")  # downloads only when named


@dataclass(frozen=True)
class Entry:
    kind: str
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch
    in_progress: bool  # an unfinished write


def _measure(path: Path) -> tuple[int, float]:
    """(bytes, newest mtime) of a file, or of everything under a folder."""
    if not path.is_dir():
        st = path.stat()
        return st.st_size, st.st_mtime
    size, newest = 0, path.stat().st_mtime
    for item in path.rglob("*"):  # rglob does not follow symbolic links to folders
        if item.is_file() and not item.is_symlink():
            st = item.stat()
            size, newest = size + st.st_size, max(newest, st.st_mtime)
    return size, newest


def entries(kinds: list[str] | None = None) -> list[Entry]:
    """Every entry of the given kinds (all when None), oldest use first within a kind."""
    found = []
    for kind in kinds or list(KINDS):
        folder = cache_dir() / kind
        if not is_marked_kind(folder):  # missing, a symbolic link, or a folder nnlab did not make
            continue
        items = []
        for path in folder.iterdir():
            if path.is_symlink() or not is_entry_name(kind, path.name):
                continue
            try:
                size, used = _measure(path)
            except OSError:  # removed meanwhile by another process
                continue
            items.append(Entry(kind, path, size, used, path.name.endswith(IN_PROGRESS)))
        found += sorted(items, key=lambda e: e.last_used)
    return found


def check_kinds(kinds: list[str]) -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise NnlabError(f"cache kind {unknown[0]!r}: unknown (one of {', '.join(KINDS)})")
    return kinds


def removable(kinds: list[str] | None, older_than_days: float | None,
              now: float | None = None) -> list[Entry]:
    """The entries `clean` would remove: of the kinds (default: all but downloads), unused for
    longer than `older_than_days` (any age when None), never an unfinished write under a day
    old."""
    if older_than_days is not None and not 0 <= older_than_days < 1e6:
        raise NnlabError(f"--older-than {older_than_days}: expected a number of days from 0 to 1e6")
    chosen_kinds = check_kinds(kinds) if kinds else list(DEFAULT_CLEAN)
    root = cache_dir()
    if not (root.exists() or root.is_symlink()):
        return []
    if not is_marked_root(root):
        raise NnlabError(f"{root}: not a cache nnlab made (no {root / 'CACHEDIR.TAG'}); nothing "
                         "removed (check $NNLAB_CACHE_DIR)")
    now = time.time() if now is None else now
    chosen = []
    for e in entries(chosen_kinds):
        age = now - e.last_used
        if e.in_progress and age < STALE_SECONDS:
            continue
        if older_than_days is None or age > older_than_days * 86400:
            chosen.append(e)
    return chosen


def remove(entry: Entry) -> None:
    """Delete one entry; rmtree removes symbolic links inside a folder, never their targets."""
    if entry.path.is_dir() and not entry.path.is_symlink():
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        entry.path.unlink(missing_ok=True)


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as `du --si`)."""
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


def human_age(seconds: float) -> str:
    """How long ago, in the unit a person reads at a glance."""
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
