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
from nnlab.data.cache import cache_dir, kind_dir
from nnlab.data.images import load_images
from nnlab.errors import NnlabError
from nnlab.tasks import similarity_teacher

DAY = 86400.0


OLD, NEW = "a" * 24, "b" * 24  # entry keys as nnlab names them


def put(relative: str, size: int = 10, age_days: float = 0.0) -> Path:
    """A cache file of `size` bytes last used `age_days` ago, in a kind folder nnlab made."""
    kind, _, rest = relative.partition("/")
    path = kind_dir(kind) / rest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return path


def test_clean_spares_downloads_recent_entries_and_live_writes(run_cli):
    old_feat = put(f"contextual/{OLD}.safetensors", 2000, age_days=40)
    new_feat = put(f"contextual/{NEW}.safetensors", 3000, age_days=1)
    download = put("downloads/cifar-10-python.tar.gz", 500, age_days=400)
    live_tmp = put(f"contextual/.{NEW}.safetensors.k3j_9.tmp", 50, age_days=0.01)  # being written
    dead_tmp = put(f"teacher/.{OLD}.pt.x99ab.tmp", 70, age_days=3)  # left by a killed process
    generated = put("generated/similarity-v2/SICK.txt", 40, age_days=60)  # a folder entry
    put("generated/similarity-v2/.complete", 3, age_days=2)  # its newest file counts

    plan = run_cli("cache", "clean", "--older-than", "30", "--dry-run")
    assert plan.code == 0, plan.err
    assert f"would remove contextual/{OLD}.safetensors (2.0 KB)" in plan.out
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
    put(f"images/{'c' * 32}-v1.safetensors", 1500, age_days=2)
    put(f"teacher/{OLD}.pt", 20)
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
    (entry,) = (cache_dir() / "images").glob("*.safetensors")
    os.utime(entry, (0, 0))
    load_images(str(folder))  # a hit
    assert time.time() - entry.stat().st_mtime < 60

    scores = put(f"teacher/{OLD}.pt", age_days=90)
    torch.save(torch.zeros(3), scores)
    os.utime(scores, (0, 0))
    assert similarity_teacher._read(scores, 3) is not None
    assert time.time() - scores.stat().st_mtime < 60
    assert cache_usage.removable(None, 30) == []


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 KB"),
                                         (2_600_000_000, "2.6 GB")])
def test_human_bytes(n, text):
    assert cache_usage.human_bytes(n) == text


def test_clean_removes_only_what_nnlab_made(run_cli, tmp_path, monkeypatch):
    """A kind folder that is a symbolic link is not followed; a user's files that share a
    kind folder's name (in a folder nnlab did not make) are not touched; names nnlab does not
    give are not touched; a cache root without nnlab's marker is refused in one line."""
    mine = put(f"images/{'d' * 32}-v1.safetensors", 100, age_days=5)
    keep = put("images/holiday.jpg", 100, age_days=5)  # not a name nnlab gives
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / f"{OLD}.safetensors").write_bytes(b"user data")
    (cache_dir() / "contextual").symlink_to(elsewhere, target_is_directory=True)
    r = run_cli("cache", "clean")
    assert r.code == 0, r.err
    assert not mine.exists() and keep.exists() and (elsewhere / f"{OLD}.safetensors").exists()

    home = tmp_path / "home"  # NNLAB_CACHE_DIR pointed at a folder of the user's own
    for rel in ("images/x.png", f"downloads/{'e' * 8}.tar.gz", f"contextual/{OLD}.safetensors"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(b"mine")
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(home))
    for args in (["cache", "clean"], ["cache", "clean", "downloads"]):
        r = run_cli(*args)
        assert r.code == 2 and "not a cache nnlab made" in r.err and len(r.err.strip().splitlines()) == 1
    kind_dir("teacher")  # nnlab writes there now: a folder of other files is still not claimed
    assert run_cli("cache", "clean", "images", "downloads", "contextual").code == 2
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and
                  p.parent.name != "teacher") == sorted(
        ["images/x.png", f"downloads/{'e' * 8}.tar.gz", f"contextual/{OLD}.safetensors"])


def test_a_cleaned_generated_data_set_is_rebuilt_on_evaluate(run_cli, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "similarity", "--model", "lstm", "--data", "generated", "--epochs", "1",
                "--set", "data.limit=60", "--out", run, "--quiet")
    assert r.code == 0, r.err
    before = run_cli("evaluate", run, "--json")
    assert run_cli("cache", "clean", "generated").code == 0
    assert not any((cache_dir() / "generated").glob("similarity-*"))
    after = run_cli("evaluate", run, "--json")
    assert after.code == 0, after.err
    assert json.loads(after.out)["pearson"] == json.loads(before.out)["pearson"]
