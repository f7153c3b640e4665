"""`nnlab cache info|clean`: what the cache holds, removed by kind and by last use."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from conftest import write_image_folder
from nnlab.data import cache_usage
from nnlab.data.cache import cache_dir
from nnlab.data.images import load_images
from nnlab.errors import NnlabError
from nnlab.tasks import similarity_teacher

DAY = 86400.0


def put(relative: str, size: int = 10, age_days: float = 0.0) -> Path:
    """A cache file of `size` bytes last used `age_days` ago."""
    path = cache_dir() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return path


def test_clean_spares_downloads_recent_entries_and_live_writes(run_cli):
    old_feat = put("contextual/old.safetensors", 2000, age_days=40)
    new_feat = put("contextual/new.safetensors", 3000, age_days=1)
    download = put("downloads/cifar-10-python.tar.gz", 500, age_days=400)
    live_tmp = put("contextual/new.1234.tmp", 50, age_days=0.01)  # another process writing
    dead_tmp = put("teacher/.x.pt.99.tmp", 70, age_days=3)  # left by a killed process
    generated = put("generated/similarity-v2/SICK.txt", 40, age_days=60)  # a folder entry
    put("generated/similarity-v2/.complete", 3, age_days=2)  # its newest file counts

    plan = run_cli("cache", "clean", "--older-than", "30", "--dry-run")
    assert plan.code == 0, plan.err
    assert "would remove contextual/old.safetensors (2.0 KB)" in plan.out
    assert "would free 2.0 KB in 1 entries" in plan.out
    assert old_feat.exists()  # a dry run removes nothing

    done = run_cli("cache", "clean", "--older-than", "30")
    assert done.code == 0, done.err
    assert not old_feat.exists()
    assert new_feat.exists() and download.exists() and live_tmp.exists() and generated.exists()

    run_cli("cache", "clean")  # every age, all kinds but downloads
    assert not new_feat.exists() and not dead_tmp.exists() and not generated.parent.exists()
    assert live_tmp.exists() and download.exists()

    run_cli("cache", "clean", "downloads")
    assert not download.exists()


def test_info_lists_every_entry_with_its_size(run_cli):
    put("images/a-v1.safetensors", 1500, age_days=2)
    put("teacher/k.pt", 20)
    shown = run_cli("cache", "info", "--json")
    assert shown.code == 0, shown.err
    listing = json.loads(shown.out)
    assert listing["path"] == str(cache_dir())
    assert sorted((e["kind"], e["bytes"]) for e in listing["entries"]) == [
        ("images", 1500), ("teacher", 20)]
    table = run_cli("cache", "info")
    assert table.code == 0 and "1.5 KB" in table.out and "total: 1.5 KB" in table.out


def test_bad_kind_or_age_is_one_line(run_cli):
    bad = run_cli("cache", "clean", "features")
    assert bad.code == 2 and "cache kind 'features': unknown" in bad.err
    assert len(bad.err.strip().splitlines()) == 1
    with pytest.raises(NnlabError, match="--older-than"):
        cache_usage.removable(None, -1.0)


def test_a_cache_hit_counts_as_use(tmp_path):
    """Reading an entry refreshes its mtime, so `--older-than` spares what runs still read."""
    folder = write_image_folder(tmp_path / "imgs", per_class=2)
    load_images(str(folder))  # decodes and writes the cache entry
    (entry,) = (cache_dir() / "images").iterdir()
    os.utime(entry, (0, 0))
    load_images(str(folder))  # a hit
    assert time.time() - entry.stat().st_mtime < 60

    scores = put("teacher/k.pt", age_days=90)
    torch.save(torch.zeros(3), scores)
    os.utime(scores, (0, 0))
    assert similarity_teacher._read(scores, 3) is not None
    assert time.time() - scores.stat().st_mtime < 60
    assert cache_usage.removable(None, 30) == []


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 KB"),
                                         (2_600_000_000, "2.6 GB")])
def test_human_bytes(n, text):
    assert cache_usage.human_bytes(n) == text
