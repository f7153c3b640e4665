"""The two official CIFAR-10 formats: pickled python batches and fixed-size binary records.

python: `data_batch_1..5`, `test_batch` (dicts with b"data" (N, 3072) uint8, b"labels"),
        `batches.meta` (b"label_names").
binary: `data_batch_1..5.bin`, `test_batch.bin`: records of 1 label byte + 3072 pixel bytes;
        `batches.meta.txt`: one class name per line.
"""

from __future__ import annotations

import io
import pickle
import re
from typing import ClassVar

import numpy as np

from nnlab.data.files import FileTree
from nnlab.errors import NnlabError

PIXELS = 3 * 32 * 32
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

_TRAIN_PY = re.compile(r"^data_batch_\d+$")
_TRAIN_BIN = re.compile(r"^data_batch_\d+\.bin$")

Arrays = tuple[np.ndarray, np.ndarray]  # images (N, 3, 32, 32) uint8, labels (N,) int64


def detect(names: list[str]) -> str | None:
    if any(_TRAIN_PY.match(n) for n in names):
        return "cifar-python"
    if any(_TRAIN_BIN.match(n) for n in names):
        return "cifar-binary"
    return None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only numpy arrays and plain containers: a data file must not run code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(tree: FileTree, name: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(tree.read(name)), encoding="bytes").load()
    except Exception as e:  # truncated files raise EOFError, UnpicklingError, ValueError...
        raise NnlabError(f"{tree.describe(name)}: truncated or corrupt pickle ({e})") from None
    if not isinstance(obj, dict):
        raise NnlabError(f"{tree.describe(name)}: expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _python_batch(tree: FileTree, name: str, num_classes: int) -> Arrays:
    batch = _unpickle(tree, name)
    where = tree.describe(name)
    if "data" not in batch or "labels" not in batch:
        raise NnlabError(f"{where}: missing field 'data' or 'labels'")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise NnlabError(
            f"{where}: field 'data' must be uint8 of shape (N, {PIXELS}), "
            f"found {data.dtype} {tuple(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise NnlabError(f"{where}: {len(labels)} labels for {data.shape[0]} images")
    _check_labels(labels, num_classes, where)
    return data.reshape(-1, 3, 32, 32), labels


def _binary_batch(tree: FileTree, name: str, num_classes: int) -> Arrays:
    raw = tree.read(name)
    where = tree.describe(name)
    if len(raw) == 0 or len(raw) % (PIXELS + 1):
        raise NnlabError(
            f"{where}: {len(raw)} bytes is not a whole number of {PIXELS + 1}-byte records"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, PIXELS + 1)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, num_classes, where)
    return np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32), labels


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise NnlabError(f"{where}: label {int(labels.max())} outside 0..{num_classes - 1}")


def _classes(tree: FileTree, fmt: str) -> list[str]:
    names = set(tree.names())
    if fmt == "cifar-python" and "batches.meta" in names:
        meta = _unpickle(tree, "batches.meta")
        raw = meta.get("label_names")
        if raw is None:
            raise NnlabError(f"{tree.describe('batches.meta')}: missing field 'label_names'")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    if fmt == "cifar-binary" and "batches.meta.txt" in names:
        text = tree.read("batches.meta.txt").decode("utf-8", errors="replace")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return list(CIFAR10_CLASSES)


def load(tree: FileTree, fmt: str) -> tuple[Arrays, Arrays | None, list[str]]:
    """Return (train, test or None, class names) from a tree in one of the CIFAR formats."""
    classes = _classes(tree, fmt)
    pattern, read, test_name = (
        (_TRAIN_PY, _python_batch, "test_batch")
        if fmt == "cifar-python"
        else (_TRAIN_BIN, _binary_batch, "test_batch.bin")
    )
    names = tree.names()
    train_names = sorted((n for n in names if pattern.match(n)), key=_batch_number)
    parts = [read(tree, n, len(classes)) for n in train_names]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = read(tree, test_name, len(classes)) if test_name in names else None
    return train, test, classes


def _batch_number(name: str) -> int:
    return int(re.findall(r"\d+", name)[0])
