"""Shared fixtures: an isolated cache, a CLI runner, and small data sets in the real formats."""

from __future__ import annotations

import io
import os
import pickle
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sentence_class
from PIL import Image

from nnlab import cli

# the fourth task (sentence classification, one module) is registered for the whole test run,
# as a user's own task would be: every test that walks the registry meets it
sentence_class.register()

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_CIFAR = Path(os.environ.get("NNLAB_DATA", SHARED_DATA)) / "cifar10"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own decode cache; NNLAB_DATA never leaks into tests."""
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NNLAB_DATA", raising=False)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run `nnlab ARGS...` in-process (importing torch once per session, not per call)."""

    def run(*args: str) -> CliResult:
        argv = sys.argv
        sys.argv = ["nnlab", *map(str, args)]
        code = 0
        try:
            cli.main()
        except SystemExit as e:
            code = int(e.code or 0)
        finally:
            sys.argv = argv
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def random_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_cifar_python(root: Path, per_batch: int = 20, batches: int = 2, classes: int = 10) -> Path:
    """CIFAR-10 python layout exactly as the official archive has it (bytes keys, lists)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"class{i}" for i in range(classes)]
    for i in range(1, batches + 1):
        batch = {b"batch_label": f"training batch {i} of {batches}".encode(),
                 b"labels": [int(x) for x in rng.integers(0, classes, per_batch)],
                 b"data": random_images(per_batch, (3, 32, 32), i).reshape(per_batch, -1),
                 b"filenames": [f"img{j}.png".encode() for j in range(per_batch)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"labels": [int(x) for x in rng.integers(0, classes, per_batch)],
            b"data": random_images(per_batch, (3, 32, 32), 99).reshape(per_batch, -1)}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    meta = {b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_cifar_binary(root: Path, per_batch: int = 20, batches: int = 2) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}.bin" for i in range(1, batches + 1)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, per_batch, dtype=np.uint8)[:, None]
        pixels = random_images(per_batch, (3, 32, 32), len(name)).reshape(per_batch, -1)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"bin{i}" for i in range(10)) + "\n\n")
    return folder


def write_image_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 6,
                       size: tuple[int, int] = (32, 32), mode: str = "RGB", fmt: str = "png") -> Path:
    rng = np.random.default_rng(3)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            img = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode)
            img.save(root / c / f"{i:04d}.{fmt}")
    return root


def tar_folder(folder: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def png_bytes(size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny finished runs on the generated data: two seeds of a model per task, a second model
    per text task, a tagger on other tags (BIO, the recipe tags BIOES) to be refused, and a
    model per text task on another vocabulary (its own graph inputs)."""
    from rich.console import Console

    from nnlab import experiment

    root = tmp_path_factory.mktemp("members")
    quiet = Console(quiet=True)
    found = {}
    for name, task, model, sets in (
            ("img0", "image", "cnn", ["data.limit=200", "train.seed=0"]),
            ("img1", "image", "cnn", ["data.limit=200", "train.seed=1"]),
            ("kp0", "keyphrase", "bilstm-crf", ["data.limit=60", "train.seed=0"]),
            ("kp1", "keyphrase", "bilstm-crf", ["data.limit=60", "train.seed=1"]),
            ("kpsoft", "keyphrase", "bilstm", ["data.limit=60"]),
            ("kpbio", "keyphrase", "bilstm-crf", ["data.limit=60", "data.encoding=bio"]),
            ("kpvocab", "keyphrase", "bilstm-crf", ["data.limit=30"]),  # another vocabulary
            ("sim0", "similarity", "lstm", ["data.limit=300", "train.seed=0"]),
            ("sim1", "similarity", "lstm", ["data.limit=300", "train.seed=1"]),
            ("simrnn", "similarity", "rnn", ["data.limit=300"]),
            ("simvocab", "similarity", "lstm", ["data.limit=120"])):  # another vocabulary
        cfg = experiment.resolve_config(task, model, data="generated", epochs=2, sets=sets)
        experiment.train_run(cfg, root / name, quiet, progress=False)
        found[name] = root / name
    return found
