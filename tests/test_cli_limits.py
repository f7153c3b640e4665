"""The CLI's numbers and strings from a careless user: every option out of range, every broken
field is one line on stderr (exit 2), nothing is left half-written, and user text is printed
as written (no console markup, no emoji codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnlab import fileio


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny finished similarity run."""
    from rich.console import Console

    from nnlab import experiment

    folder = tmp_path_factory.mktemp("cli") / "run"
    cfg = experiment.resolve_config("similarity", "lstm", data="generated", epochs=1,
                                    sets=["data.limit=60"])
    experiment.train_run(cfg, folder, Console(quiet=True), progress=False)
    return folder


def one_line(r, *words: str) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    for w in words:
        assert w in r.err, (w, r.err)


TRAIN = ["train", "similarity", "--model", "lstm", "--data", "generated", "--epochs", "1"]


@pytest.mark.parametrize("setting,words", [
    ("train.seed=99999999999999999999999", "train.seed"), ("train.seed=-1", "train.seed"),
    ("data.split_seed=18446744073709551616", "data.split_seed"), ("data.limit=-5", "data.limit"),
    ("data.val_size=1.5", "data.val_size"), ("data.val_size=0", "data.val_size"),
    ("optim.lr=nan", "optim.lr"), ("optim.lr=inf", "optim.lr"), ("optim.momentum=2", "optim.momentum"),
    ("train.epochs=0", "train.epochs"), ("schedule.gamma=-1", "schedule.gamma"),
    ("data.batch_size=99999999999", "data.batch_size"), ("optim.betas=[0.9, 1.5]", "optim.betas"),
])
def test_config_numbers_out_of_range(run_cli, tmp_path, setting, words):
    r = run_cli(*TRAIN, "--set", setting, "--out", tmp_path / "r")
    one_line(r, words)
    assert not (tmp_path / "r").exists()


def test_seeds_out_of_range_leave_nothing(run_cli, tmp_path):
    for seeds in ("99999999999999999999999", "-1", "0,0", ",", "1e3"):
        r = run_cli("reproduce", "similarity", "--seeds", seeds, "--out", tmp_path / "s")
        one_line(r, "--seeds")
        assert not (tmp_path / "s").exists()


def test_predict_and_models_options(run_cli, run):
    for k in ("-1", "0", "1001"):
        one_line(run_cli("predict", run, "a b", "c d", "--top-k", k), "--top-k")
    # each task declares its own predict flags; another task's is named, not ignored
    one_line(run_cli("predict", run, "a b", "c d", "--top-k", "5"),
             "--top-k: not an option of similarity runs (their options: --pairs)")
    one_line(run_cli("predict", run, "a b", "--files"), "--files: not an option of similarity runs")
    for shape in ("-1,32,32", "3,100000,100000", "3,0,32", "x", "3,32"):
        one_line(run_cli("models", "cnn", "--input-shape", shape), "--input-shape")
    one_line(run_cli("models", "fast", "--input-shape", "3,4,4"), "cannot take inputs")
    one_line(run_cli("models", "cnn", "--classes", "0"), "--classes")


@pytest.mark.parametrize("vocab", [
    {"items": ["<pad>", "<unk>", 3, 4], "lowercase": True},
    {"items": "not a list", "lowercase": True},
    {"items": ["<pad>", "<unk>", "a"], "lowercase": "yes"},
    {"items": ["<pad>", "<unk>", "a"], "lowercase": True, "trained": 99},
])
def test_vocabulary_of_the_wrong_type_in_a_run(run_cli, run, tmp_path, vocab):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    saved = json.loads((broken / "config.json").read_text())
    saved["task_info"]["vocab"] = vocab
    (broken / "config.json").write_text(json.dumps(saved))
    for args in (["evaluate", broken], ["predict", broken, "a b", "c d"]):
        one_line(run_cli(*args), "task_info.vocab")


def test_report_out_onto_a_file_and_a_full_disk(run_cli, run, tmp_path, monkeypatch):
    (tmp_path / "taken").write_text("mine")
    one_line(run_cli("report", run, "--out", tmp_path / "taken"), "in the way")
    assert (tmp_path / "taken").read_text() == "mine"

    out = tmp_path / "rep"
    assert run_cli("report", run, "--out", out, "--title", "first").code == 0
    before = {n: (out / n).read_text() for n in ("report.md", "report.html")}
    real = fileio.atomic_write_text

    def full_disk(path: Path, text: str) -> None:
        if "report.html" in path.name:
            from nnlab.errors import NnlabError

            raise NnlabError(f"{path}: cannot write (No space left on device)")
        real(path, text)

    monkeypatch.setattr(fileio, "atomic_write_text", full_disk)
    one_line(run_cli("report", run, "--out", out, "--title", "second"), "No space left")
    assert {n: (out / n).read_text() for n in ("report.md", "report.html")} == before  # both old
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_user_text_is_printed_as_written(run_cli, run, tmp_path):
    r = run_cli("evaluate", tmp_path / ":x: [bold]gone[/]")
    one_line(r, ":x: [bold]gone[/]")
    one_line(run_cli("predict", run, "--pairs", tmp_path / ":thumbs_up: [red]a[/red].tsv"),
             ":thumbs_up: [red]a[/red].tsv")
    for command in ("serve", "export"):
        r = run_cli(command, "--help")
        assert r.code == 0 and f"nnlab[{'serve' if command == 'serve' else 'onnx'}]" in r.out, r.out


def test_a_setting_the_task_does_not_read_is_refused(run_cli, tmp_path):
    """data.cutout on a text run, train.label_smoothing on a similarity run: settings another
    task reads, once silently ignored, now one line naming the key and its task."""
    one_line(run_cli(*TRAIN, "--set", "data.cutout=8", "--out", tmp_path / "a"),
             "data.cutout: not read by similarity runs", "setting of image runs")
    one_line(run_cli(*TRAIN, "--set", "train.label_smoothing=0.1", "--out", tmp_path / "b"),
             "train.label_smoothing: not read by similarity runs")
    config = tmp_path / "c.toml"
    config.write_text('[data]\ntag_scheme = "bio"\n')
    one_line(run_cli(*TRAIN, "--config", config, "--out", tmp_path / "c"),
             "data.tag_scheme: not read by similarity runs", "keyphrase runs", "c.toml")
    assert not any((tmp_path / n).exists() for n in "abc")
