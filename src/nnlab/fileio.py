"""Files written safely: atomic writes (a killed process leaves the old file or the new one,
never half of one), JSON in and out with the user's mistakes named, folders made with one-line
failures, and the one-writer lock. The bottom floor: every layer that writes a file uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nnlab.errors import NnlabError, short

DISK_FULL_BYTES = 1 << 20  # less free space than this after a failed write: the disk was full
LOCK = ".lock"  # flock'ed by the one process writing the folder (see folder_lock)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, fsync, then rename over `path`.

    A full disk or a folder that cannot be written is the user's to fix: one line naming the
    file (torch.save reports a full disk as an opaque RuntimeError, so the free space is
    checked before the temporary file is removed). The old file, if any, stays as it was."""
    make_folder(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise NnlabError(f"{path}: cannot write ({e.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp makes 0600, and some writers (safetensors) create the file anew, also 0600:
        # give the written file what the umask gives any other file
        os.chmod(tmp, 0o666 & ~current_umask())
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            full = free_bytes(path.parent) < DISK_FULL_BYTES
        except OSError:
            full = False
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) or (full and isinstance(e, Exception)):
            reason = "no space left on device" if full else (e.strerror or str(e))
            raise NnlabError(f"{path}: cannot write ({short(reason)})") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_texts(files: dict[Path, str]) -> None:
    """Write several text files as one: each goes to a staged copy first, and only when all
    are on disk do they replace their targets (a full disk leaves every old file as it was,
    never a new report.md beside an old or missing report.html)."""
    staged: dict[Path, Path] = {}
    try:
        for path, text in files.items():
            stage = path.with_name(f".{path.name}.staged")
            atomic_write_text(stage, text)
            staged[path] = stage
        for path, stage in staged.items():
            os.replace(stage, path)
    finally:
        for stage in staged.values():
            stage.unlink(missing_ok=True)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file nnlab wrote (config, summary, study and variant files): a
    missing, unreadable, non-JSON or non-object file is the user's error, named."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NnlabError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NnlabError(f"{path}: unreadable ({short(e)})") from None
    except json.JSONDecodeError as e:
        raise NnlabError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(value, dict):
        raise NnlabError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def make_folder(path: Path) -> None:
    """mkdir -p, with the failures a user causes (a file in the way, no permission, a full
    disk) as one line naming the folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NnlabError(f"{path}: a file is in the way (not a folder)") from None
    except NotADirectoryError:
        raise NnlabError(f"{path}: a parent of it is a file, not a folder") from None
    except OSError as e:
        raise NnlabError(f"{path}: cannot create the folder ({e.strerror})") from None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder/.lock`, held until the block ends (or the process dies:
    the kernel drops it, so a killed run never leaves a stale lock). A second nnlab process
    that wants the same folder fails at once with one line naming the holder."""
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
    except OSError as e:
        raise NnlabError(f"{folder}: cannot lock the folder ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "unknown"
            raise NnlabError(f"{folder}: in use by another nnlab process ({short(holder, 200)}); "
                             "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)
