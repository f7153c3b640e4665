"""Where nnlab keeps decoded data and downloads: $NNLAB_CACHE_DIR or ~/.cache/nnlab."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("NNLAB_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "nnlab" if xdg else Path.home() / ".cache" / "nnlab"
