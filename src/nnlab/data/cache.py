"""Where nnlab keeps decoded data and downloads: $NNLAB_CACHE_DIR or ~/.cache/nnlab.

Each kind of entry has its own folder (`KINDS`), reached through `kind_dir`. A cache hit calls
`touch`, so a file's modification time is its last use and `nnlab cache clean --older-than
DAYS` removes what no run has read lately (access times are often not kept: `noatime` mounts).

What nnlab made is marked, so that cleaning can never delete a user's own files when
$NNLAB_CACHE_DIR points somewhere shared (a home folder, a project folder): the root holds a
`CACHEDIR.TAG` (the Cache Directory Tagging spec, which backup tools also honour), and each
kind folder that nnlab created holds `.nnlab-kind`. A folder is only ever marked when nnlab
creates it or finds it empty; every entry nnlab writes has a name of its kind's pattern
(`ENTRY_NAMES`). `nnlab cache clean` deletes only names of that pattern, in marked kind folders
that are real folders (never through a symbolic link), under a marked root.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from nnlab.fileio import atomic_write_text

# folder -> what it holds; every entry in them is rebuilt on demand when missing
KINDS = {
    "downloads": "archives from nnlab data get",
    "images": "decoded image data sets",
    "contextual": "MiniLM features of text data",
    "teacher": "teacher scores (data.teacher)",
    "generated": "generated text data sets",
}

# kind -> the names nnlab gives its entries there (a file, or a folder for `generated`)
ENTRY_NAMES = {
    "downloads": re.compile(r"[\w.-]+\.(tar\.gz|tgz|zip|tar)(\.part)?"),
    "images": re.compile(r"[0-9a-f]{32}-v\d+\.safetensors"),
    "contextual": re.compile(r"[0-9a-f]{24}\.safetensors"),
    "teacher": re.compile(r"[0-9a-f]{24}\.pt"),
    "generated": re.compile(r"[a-z][a-z0-9_]*-v\d+"),
}
# atomic_write's temporary files: `.NAME.RANDOM.tmp` beside the entry NAME
TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")

ROOT_MARKER = "CACHEDIR.TAG"
ROOT_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
            "# This file is a cache directory tag created by nnlab (nnlab cache info|clean).\n"
            "# For information about cache directory tags, see https://bford.info/cachedir/\n")
KIND_MARKER = ".nnlab-kind"


def cache_dir() -> Path:
    root = os.environ.get("NNLAB_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "nnlab" if xdg else Path.home() / ".cache" / "nnlab"


def _claim(folder: Path, marker: str, text: str, ours: bool) -> None:
    """Mark `folder` as nnlab's when nnlab creates it or finds it empty, or when it is `ours`
    by name (the default ~/.cache/nnlab, from before markers); a folder that already holds
    other files stays unmarked (cleaning will leave it alone)."""
    if (folder / marker).is_file():
        return
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        if folder.is_symlink() or not folder.is_dir() or not (ours or not any(folder.iterdir())):
            return
    except OSError:
        return  # a read-only place: the writer names the folder if it cannot write there
    with contextlib.suppress(OSError):
        atomic_write_text(folder / marker, text)


def kind_dir(kind: str) -> Path:
    """The folder of one kind of entry, created (and marked, see the module doc) if missing."""
    root = cache_dir()
    default = not os.environ.get("NNLAB_CACHE_DIR")  # a folder named for nnlab: ours
    _claim(root, ROOT_MARKER, ROOT_TAG, default)
    folder = root / kind
    _claim(folder, KIND_MARKER, f"nnlab cache: {KINDS[kind]}\n", default)
    return folder


def is_marked_root(root: Path) -> bool:
    return (root / ROOT_MARKER).is_file() and not root.is_symlink()


def is_marked_kind(folder: Path) -> bool:
    """A real folder (not a symbolic link) that nnlab created."""
    return not folder.is_symlink() and folder.is_dir() and (folder / KIND_MARKER).is_file()


def is_entry_name(kind: str, name: str) -> bool:
    """Whether `name` is one nnlab gives an entry of `kind`, or a temporary file of one."""
    temporary = TEMPORARY.fullmatch(name)
    return bool(ENTRY_NAMES[kind].fullmatch(temporary["name"] if temporary else name))


def touch(path: Path) -> None:
    """Mark a cache entry as used now (its mtime), so cleaning by age spares it; a read-only
    cache is fine."""
    with contextlib.suppress(OSError):
        os.utime(path)
