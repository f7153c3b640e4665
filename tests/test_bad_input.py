"""Every user mistake: one clear line naming the file or option, exit code 2, nothing written."""

import json
import os
import pickle
import re
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import png_bytes, tar_folder, write_cifar_binary, write_cifar_python, write_image_folder


def assert_clean_failure(result, *needles, out_dir=None, after_progress=False):
    """Exit code 2, one `error:` line naming what is wrong, no traceback, nothing left behind.
    `after_progress`: the failure came mid-training, so progress lines may come first."""
    assert result.code == 2, result
    line = result.err.strip()
    if after_progress:
        line = line.splitlines()[-1]
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


# -- files that attack or exhaust ------------------------------------------------------------
def png_of_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its data is a 1x1 image's): Pillow
    reads the size from the header before decoding anything."""
    raw = png_bytes((1, 1))
    ihdr = struct.pack(">II", width, height) + raw[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return raw[:16] + ihdr + crc + raw[33:]


def test_decompression_bomb_in_train_and_predict(tmp_path, run_cli):
    d = write_image_folder(tmp_path / "d")
    (d / "cat" / "0001.png").write_bytes(png_of_size(20_000, 20_000))
    assert_clean_failure(train(run_cli, d, tmp_path / "run"), "cat/0001.png", "decompression bomb",
                         out_dir=tmp_path / "run")
    (d / "cat" / "0001.png").write_bytes(png_bytes())
    assert train(run_cli, d, tmp_path / "run").code == 0
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_of_size(10_000, 10_000))  # 100M pixels: Pillow alone would only warn
    assert_clean_failure(run_cli("predict", tmp_path / "run", bomb), "bomb.png", "decompression bomb")


def test_archive_members_are_size_checked_before_reading(tmp_path, run_cli, monkeypatch):
    from nnlab.data import files

    d = write_image_folder(tmp_path / "d")
    archive = tar_folder(d, tmp_path / "d.tar.gz", "d")
    monkeypatch.setattr(files, "MAX_MEMBER_BYTES", 1000)  # the PNGs are about 3 kB each
    assert_clean_failure(train(run_cli, archive, tmp_path / "run"), "d.tar.gz", "bytes; nnlab reads",
                         out_dir=tmp_path / "run")


def test_a_long_line_is_not_echoed_whole(tmp_path, run_cli):
    data = tmp_path / "pairs.tsv"
    data.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                    f"1\ta b\tc d\t{'9' * 1_000_000}\tNEUTRAL\n")
    r = run_cli("train", "similarity", "--model", "rnn", "--data", data, "--out", tmp_path / "run")
    assert_clean_failure(r, "pairs.tsv:2", out_dir=tmp_path / "run")
    assert len(r.err) < 1200


def test_a_pair_field_past_the_csv_limit_reads(tmp_path):
    from nnlab.data.pairs import read_pairs

    data = tmp_path / "pairs.tsv"
    long = "word" * 50_000  # 200,000 characters: the csv module's limit is 131,072
    data.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                    f"1\t{long}\tc d\t3.5\tNEUTRAL\n")
    pairs = read_pairs(data)
    assert pairs.a == [[long]] and pairs.scores == [3.5]


def test_image_cache_is_keyed_on_content(tmp_path):
    from nnlab.data.images import load_images

    a = write_image_folder(tmp_path / "a", per_class=2)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    rng = np.random.default_rng(7)
    for f in sorted(b.rglob("*.png")):  # other pixels, same names, sizes and mtimes
        img = Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
        img.save(f, compress_level=0)
        twin = a / f.relative_to(b)
        Image.open(twin).save(twin, compress_level=0)
        assert f.stat().st_size == twin.stat().st_size
        os.utime(f, ns=(twin.stat().st_atime_ns, twin.stat().st_mtime_ns))
    first = load_images(str(a)).train.images
    second = load_images(str(b)).train.images
    assert not torch.equal(first, second)
    assert torch.equal(load_images(str(a)).train.images, first)  # the cache still serves a


# -- study folders ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "+ + +"])
def test_a_variant_name_that_names_no_folder_is_refused(tmp_path, run_cli, name):
    from test_studies import write_study

    study = write_study(tmp_path, f"""
task = "keyphrase"
[[variants]]
name = "bilstm"
config = "keyphrase/bilstm.toml"
[[variants]]
name = "{name}"
config = "keyphrase/bilstm-crf.toml"
""")
    out = tmp_path / "study"
    r = run_cli("reproduce", study, "--out", out, "--data", "generated")
    assert_clean_failure(r, "tiny.toml", repr(name), "no letter or digit", out_dir=out)


def test_corrupt_study_and_variant_files(tmp_path, run_cli):
    from test_studies import KEYPHRASE_STUDY, write_study

    study = write_study(tmp_path, KEYPHRASE_STUDY.replace('quick = ["train.epochs=1", "data.batch_size=64"]',
                                                          'quick = ["train.epochs=1", "data.limit=40"]'))
    out = tmp_path / "study"
    assert run_cli("reproduce", study, "--out", out, "--data", "generated", "--quiet").code == 0
    variant = out / "runs" / "bilstm" / "variant.json"
    variant.write_text("{not json")
    assert_clean_failure(run_cli("report", out, "--out", tmp_path / "r"), "variant.json", "not valid JSON")
    variant.write_text("[]")
    assert_clean_failure(run_cli("report", out, "--out", tmp_path / "r"), "variant.json", "JSON object")
    (out / "runs" / "bilstm-crf" / "config.json").write_text("{")
    assert_clean_failure(run_cli("report", out, "--out", tmp_path / "r"), "bilstm-crf/config.json")
    (out / "study.json").write_text("[1, 2")
    r = run_cli("reproduce", study, "--out", out, "--data", "generated", "--quiet")
    assert_clean_failure(r, "study.json", "not valid JSON")


# -- run folders and options -----------------------------------------------------------------
@pytest.mark.parametrize("content,needle", [("{}", "no `config` object"), ("[]", "JSON object"),
                                            ('{"config": {"task": "audio"}, "task_info": {}}',
                                             "audio")])
def test_evaluate_and_predict_on_a_broken_config(tmp_path, run_cli, content, needle):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    assert_clean_failure(run_cli("evaluate", run), "config.json", needle)
    assert_clean_failure(run_cli("predict", run, "x.png"), "config.json", needle)


@pytest.mark.parametrize("edit,needle", [
    (lambda info: info.pop("mean"), "task_info.mean is missing"),
    (lambda info: info.update(classes="cat,dog"), "task_info.classes should be a list, found str"),
    (lambda info: info["data"].update(train_examples="many"),
     "task_info.data.train_examples should be a whole number"),
])
def test_a_hand_edited_task_info_is_named_field_by_field(tmp_path, run_cli, edit, needle):
    """The saved info is a typed record (nnlab.tasks.info): a missing or mistyped field is one
    line naming it, before any model is built."""
    run = tmp_path / "run"
    assert train(run_cli, write_image_folder(tmp_path / "d"), run).code == 0
    saved = json.loads((run / "config.json").read_text())
    edit(saved["task_info"])
    (run / "config.json").write_text(json.dumps(saved))
    assert_clean_failure(run_cli("evaluate", run), "config.json", needle)


def test_out_below_a_file_or_unwritable(tmp_path, run_cli):
    d = write_image_folder(tmp_path / "d")
    blocker = tmp_path / "file"
    blocker.write_text("a file")
    assert_clean_failure(train(run_cli, d, blocker / "run"), "is a file, not a folder")
    assert_clean_failure(train(run_cli, d, blocker), "a file is in the way")
    assert blocker.read_text() == "a file"
    if os.geteuid() == 0:
        return  # root writes anywhere: the permission case cannot be staged
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_clean_failure(train(run_cli, d, locked / "run"), "not writable")


def test_config_that_is_a_folder_and_bad_settings(tmp_path, run_cli):
    d = write_image_folder(tmp_path / "d")
    out = tmp_path / "run"
    r = run_cli("train", "image", "--config", tmp_path, "--out", out)
    assert_clean_failure(r, str(tmp_path), "a folder, not a config file", out_dir=out)
    binary = tmp_path / "c.toml"
    binary.write_bytes(b"\xff\xfe\x00model")
    assert_clean_failure(run_cli("train", "image", "--config", binary, "--out", out), "c.toml", out_dir=out)
    assert_clean_failure(train(run_cli, d, out, "--set", "model.dropout=1.5"), "model.dropout",
                         "[0, 1)", out_dir=out)
    assert_clean_failure(train(run_cli, d, out, "--set", "train.threads=-5"), "train.threads",
                         out_dir=out)
    r = run_cli("train", "similarity", "--model", "rnn", "--data", "generated", "--out", out,
                "--set", "model.hidden_sizes=[0]")
    assert_clean_failure(r, "model.hidden_sizes", out_dir=out)


def test_latin1_pairs_file_for_predict(tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    data = {"path": "x", "format": "tsv", "fingerprint": "0", "train_examples": 1,
            "val_examples": 1, "has_test": False}
    (run / "config.json").write_text(json.dumps({  # a run's info; the inputs are read first
        "config": {"task": "similarity"},
        "task_info": {"score_range": [1, 5], "wordpieces": "x", "data": data}}))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes("caf\xe9 au lait\tun caf\xe9\n".encode("latin-1"))
    assert_clean_failure(run_cli("predict", run, "--pairs", pairs), "pairs.tsv", "not UTF-8")


@pytest.mark.parametrize("value", ["nan", "1e39", "-inf"])
def test_word_vectors_with_non_finite_values(tmp_path, run_cli, value):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text(f"the 0.1 0.2\nof 0.3 {value}\n")
    r = run_cli("train", "similarity", "--model", "rnn", "--data", "generated", "--embeddings",
                vectors, "--out", tmp_path / "run")
    assert_clean_failure(r, "vectors.txt:2", "'of'", out_dir=tmp_path / "run")


# -- user strings are data -------------------------------------------------------------------
MARKUP_CLASSES = ["[/x]", "$\\foo$", "<script>alert(1)</script>", "[bold]b", "plain",
                  "<img src=x onerror=alert(2)>", "c7", "c8", "c9", "a|b"]


def test_class_names_with_markup_mathtext_and_html(tmp_path, run_cli):
    d = write_cifar_python(tmp_path / "d")
    meta = {b"label_names": [n.encode() for n in MARKUP_CLASSES], b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    run = tmp_path / "run"
    r = train(run_cli, tmp_path / "d", run)
    assert r.code == 0, r.err
    assert (run / "plots" / "confusion_val.png").is_file()
    r = run_cli("evaluate", run)
    assert r.code == 0, r.err
    assert "[/x]" in r.out and "$\\foo$" in r.out
    odd = tmp_path / "[" / "x].png"  # a path holding "[/x]"
    odd.parent.mkdir()
    odd.write_bytes(png_bytes())
    r = run_cli("predict", run, odd)
    assert r.code == 0 and "[/x].png" in r.out, r.err
    r = run_cli("report", run, "--out", tmp_path / "report", "--title", "<b>t</b> [/x]")
    assert r.code == 0, r.err
    md = (tmp_path / "report" / "report.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    for raw in ("<script>", "<img src=x", "<b>t</b>"):
        assert raw not in page
        assert not re.search(r"(?<!\\)" + re.escape(raw), md), raw  # only as escaped text
    assert "\\<script\\>alert(1)\\</script\\>" in md and "&lt;script&gt;" in page
