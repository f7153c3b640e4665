"""Every user mistake: one clear line naming the file or option, exit code 2, nothing written."""

import pickle

import numpy as np
import pytest

from conftest import write_cifar_binary, write_cifar_python, write_image_folder


def assert_clean_failure(result, *needles, out_dir=None):
    assert result.code == 2, result
    line = result.err.strip()
    assert line.startswith("error: ") and "\n" not in line, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in line, line
    if out_dir is not None:
        assert not out_dir.exists(), "a failed command left a run folder behind"


def train(run_cli, data, out, *extra):
    return run_cli("train", "image", "--model", "cnn", "--data", data, "--epochs", "1",
                   "--out", out, "--quiet", *extra)


def test_truncated_pickle(tmp_path, run_cli):
    folder = write_cifar_python(tmp_path / "d")
    batch = folder / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    r = train(run_cli, tmp_path / "d", tmp_path / "run")
    assert_clean_failure(r, "data_batch_2", "truncated or corrupt pickle", out_dir=tmp_path / "run")


def test_wrong_array_size(tmp_path, run_cli):
    folder = write_cifar_python(tmp_path / "d")
    batch = {b"labels": [0] * 4, b"data": np.zeros((4, 3000), dtype=np.uint8)}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    r = train(run_cli, tmp_path / "d", tmp_path / "run")
    assert_clean_failure(r, "data_batch_1", "(4, 3000)", out_dir=tmp_path / "run")


def test_label_count_mismatch(tmp_path, run_cli):
    folder = write_cifar_python(tmp_path / "d")
    batch = {b"labels": [0] * 3, b"data": np.zeros((4, 3072), dtype=np.uint8)}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    assert_clean_failure(train(run_cli, tmp_path / "d", tmp_path / "run"), "3 labels for 4 images")


def test_pickle_that_would_run_code_is_refused(tmp_path, run_cli):
    folder = write_cifar_python(tmp_path / "d")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    r = train(run_cli, tmp_path / "d", tmp_path / "run")
    assert_clean_failure(r, "data_batch_1", "refusing to load builtins.print")
    assert "pwned" not in r.out


def test_binary_with_partial_record(tmp_path, run_cli):
    folder = write_cifar_binary(tmp_path / "d")
    f = folder / "data_batch_2.bin"
    f.write_bytes(f.read_bytes()[:-10])
    assert_clean_failure(train(run_cli, folder, tmp_path / "run"), "data_batch_2.bin",
                         "3073-byte records", out_dir=tmp_path / "run")


@pytest.mark.parametrize("layout", ["empty", "classless"])
def test_empty_or_classless_folder(tmp_path, run_cli, layout):
    d = tmp_path / "d"
    d.mkdir()
    if layout == "classless":
        (d / "a.png").write_bytes(b"")
        (d / "b.png").write_bytes(b"")
    assert_clean_failure(train(run_cli, d, tmp_path / "run"), str(d), "no class folders",
                         out_dir=tmp_path / "run")


def test_non_image_file(tmp_path, run_cli):
    d = write_image_folder(tmp_path / "d")
    (d / "dog" / "notes.txt").write_text("not a picture")
    assert_clean_failure(train(run_cli, d, tmp_path / "run"), "dog/notes.txt", "not an image file")


def test_corrupt_image_file(tmp_path, run_cli):
    d = write_image_folder(tmp_path / "d")
    (d / "cat" / "0003.png").write_bytes(b"\x89PNG garbage")
    assert_clean_failure(train(run_cli, d, tmp_path / "run"), "cat/0003.png", "not a readable image")


def test_mixed_sizes(tmp_path, run_cli):
    d = write_image_folder(tmp_path / "d")
    write_image_folder(d, classes=("eel",), per_class=1, size=(16, 16))  # overwrites eel/0000
    assert_clean_failure(train(run_cli, d, tmp_path / "run"), "eel/0000.png", "one size")


def test_unknown_model_option_and_flag(tmp_path, run_cli):
    d = write_image_folder(tmp_path / "d")
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "resnet19", "--data", d, "--out", out)
    assert_clean_failure(r, "--model resnet19", "resnet18", out_dir=out)
    assert_clean_failure(train(run_cli, d, out, "--set", "optim.learning_rate=1"),
                         "optim.learning_rate", out_dir=out)
    assert_clean_failure(train(run_cli, d, out, "--set", "model.widht=2"), "model.widht",
                         out_dir=out)
    assert_clean_failure(train(run_cli, d, out, "--set", "train.epochs=many"), "train.epochs",
                         out_dir=out)
    assert_clean_failure(train(run_cli, d, out, "--bogus"), "--bogus", out_dir=out)


def test_missing_run_folder(tmp_path, run_cli):
    for cmd in (("evaluate",), ("predict",)):
        r = run_cli(*cmd, tmp_path / "nope", *(["x.png"] if cmd[0] == "predict" else []))
        assert_clean_failure(r, "nope", "no such run folder")
    (tmp_path / "notarun").mkdir()
    assert_clean_failure(run_cli("evaluate", tmp_path / "notarun"), "not a run folder")
    assert_clean_failure(run_cli("train", "--resume", tmp_path / "nope"), "no such run folder")


def test_existing_run_folder_is_not_overwritten(tmp_path, run_cli):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    d = write_image_folder(tmp_path / "d")
    assert_clean_failure(train(run_cli, d, out), "folder exists")
    assert (out / "keep.txt").read_text() == "mine"
