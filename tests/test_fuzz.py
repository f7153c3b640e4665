"""Property-based fuzzing of every reader: a valid small file of each format, mutated (bytes
flipped, cut, inserted, lines repeated or dropped), is either read or refused with an
NnlabError; any other exception is a bug. Bounded to a few seconds per reader."""

from __future__ import annotations

import contextlib
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import png_bytes, random_images
from nnlab.data.conll import read_conll
from nnlab.data.embeddings import load_vectors
from nnlab.data.image_folder import decode_image
from nnlab.data.images import load_images
from nnlab.data.pairs import read_pairs
from nnlab.errors import NnlabError

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """`valid` after 1-4 random edits of the kinds that damaged files show."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "repeat-line", "drop-line"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "truncate":
            del data[at:]
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i + 1] = [lines[i]] * 2 if kind == "repeat-line" else []
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def read_or_refuse(read, data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        with contextlib.suppress(NnlabError):  # anything else fails, with the input shown
            read(path)


CONLL = b"Neural\tB-KEY\nnetworks\tI-KEY\nlearn\tO\n.\tO\n\nA\tO\nCRF\tB-KEY\ndecodes\tO\n"
SICK = (b"pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        b"1\tA man plays\tA person plays\t4.5\tENTAILMENT\n2\tA dog runs\tA cat sleeps\t1.2\tNEUTRAL\n")
STS = b"main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.\n"
GLOVE = b"the 0.1 0.2 -0.3\nof 0.5 -0.1 0.25\nand 1e-3 2 3\n"
STUDY = b'title = "t"\ntask = "keyphrase"\n[[variants]]\nname = "a"\nconfig = "keyphrase/bilstm.toml"\n'
RUN_CONFIG = json.dumps({"config": {"task": "image", "model": {"name": "cnn", "args": {}},
                                    "train": {"epochs": 2}}, "task_info": {}}).encode()


@FUZZ
@given(st.data())
def test_conll_reader(data):
    read_or_refuse(read_conll, data.draw(mutated(CONLL)), "train.txt")


@FUZZ
@given(st.data(), st.sampled_from([SICK, STS]))
def test_pair_reader(data, valid):
    read_or_refuse(read_pairs, data.draw(mutated(valid)), "pairs.tsv")


@FUZZ
@given(st.data())
def test_word_vector_reader(data):
    read_or_refuse(lambda p: load_vectors(str(p)), data.draw(mutated(GLOVE)), "vectors.txt")


@FUZZ
@given(st.data())
def test_image_decoder(data):
    raw = data.draw(mutated(png_bytes((8, 8))))
    with contextlib.suppress(NnlabError):
        decode_image(raw, "x.png")


def _cifar_python_batch(n: int = 4) -> bytes:
    batch = {b"labels": [1, 2, 3, 0][:n], b"data": random_images(n, (3, 32, 32)).reshape(n, -1)}
    return pickle.dumps(batch, protocol=2)


@FUZZ
@given(st.data(), st.sampled_from(["python", "binary"]))
def test_cifar_batches(data, layout):
    if layout == "python":
        folder, name, valid = "cifar-10-batches-py", "data_batch_1", _cifar_python_batch()
    else:
        folder, name = "cifar-10-batches-bin", "data_batch_1.bin"
        valid = np.concatenate([np.array([[1], [2]], np.uint8),
                                random_images(2, (3, 32, 32)).reshape(2, -1)], axis=1).tobytes()
    raw = data.draw(mutated(valid))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / folder
        root.mkdir()
        (root / name).write_bytes(raw)
        with contextlib.suppress(NnlabError):
            load_images(str(root), use_cache=False)


@FUZZ
@given(st.data())
def test_study_file(data):
    from test_studies import write_study

    from nnlab.studies import load_study

    raw = data.draw(mutated(STUDY))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_study(Path(tmp), "")
        path.write_bytes(raw)
        with contextlib.suppress(NnlabError):
            load_study(str(path))


@FUZZ
@given(st.data())
def test_run_config(data):
    from nnlab.config import from_dict
    from nnlab.runs import RunDir

    raw = data.draw(mutated(RUN_CONFIG))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_bytes(raw)
        try:
            saved = RunDir(tmp).read_config()
            from_dict(saved["config"], "config.json")
        except NnlabError:
            pass


@pytest.mark.parametrize("valid", [CONLL, SICK, GLOVE])
def test_the_unmutated_files_read(tmp_path, valid):
    """The fuzzers start from files that are valid: otherwise they only test refusals."""
    path = tmp_path / "f.txt"
    path.write_bytes(valid)
    read = {CONLL: read_conll, SICK: read_pairs, GLOVE: lambda p: load_vectors(str(p))}[valid]
    read(path)
