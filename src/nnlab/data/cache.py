"""Where nnlab keeps decoded data and downloads: $NNLAB_CACHE_DIR or ~/.cache/nnlab.

Each kind of entry has its own folder (`KINDS`). A cache hit calls `touch`, so a file's
modification time is its last use and `nnlab cache clean --older-than DAYS` removes what no
run has read lately (access times are often not kept: `noatime` mounts).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# folder -> what it holds; every entry in them is rebuilt on demand when missing
KINDS = {
    "downloads": "archives from nnlab data get",
    "images": "decoded image data sets",
    "contextual": "MiniLM features of text data",
    "teacher": "teacher scores (data.teacher)",
    "generated": "generated text data sets",
}


def cache_dir() -> Path:
    root = os.environ.get("NNLAB_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "nnlab" if xdg else Path.home() / ".cache" / "nnlab"


def touch(path: Path) -> None:
    """Mark a cache entry as used now (its mtime), so cleaning by age spares it; a read-only
    cache is fine."""
    with contextlib.suppress(OSError):
        os.utime(path)
