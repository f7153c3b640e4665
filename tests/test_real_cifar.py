"""The real CIFAR-10 from ../shared/data (skipped when absent): load, split, a short training."""

import json
import time

import pytest
import torch

from conftest import REAL_CIFAR
from nnlab.data.images import load_images

pytestmark = pytest.mark.skipif(not REAL_CIFAR.exists(), reason=f"no real data at {REAL_CIFAR}")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cifar-cache")


def test_real_cifar_loads_and_caches(shared_cache, monkeypatch):
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(shared_cache))
    src = load_images(str(REAL_CIFAR))
    assert src.train.images.shape == (50_000, 3, 32, 32)
    assert src.train.labels.bincount().tolist() == [5000] * 10
    assert src.train.classes[0] == "airplane" and src.train.classes[-1] == "truck"
    t = time.perf_counter()
    again = load_images(str(REAL_CIFAR))
    assert time.perf_counter() - t < 5  # the cache; the benchmark measures the real figure
    assert torch.equal(again.train.labels, src.train.labels)


def test_real_cifar_slice_trains_above_chance(shared_cache, monkeypatch, tmp_path, run_cli):
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(shared_cache))
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "cnn", "--data", REAL_CIFAR, "--epochs", "2",
                "--out", out, "--set", "data.limit=5000", "--quiet")
    assert r.code == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val"]["n"] == 5000  # the 5,000 validation images, all of them
    assert summary["val"]["accuracy"] > 0.2  # chance is 0.1
