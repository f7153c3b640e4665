"""Tasks are registered objects: the upper floors hold no task's name, and a fourth task
(tests/sentence_class.py: one module with its reader) trains, evaluates, predicts and
reports through the CLI without any other change."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from nnlab import tasks

SRC = Path(__file__).resolve().parents[1] / "src" / "nnlab"
UPPER_FLOORS = ("experiment.py", "cli.py", "report.py", "studies.py", "demo.py", "train.py")


def test_upper_floors_never_branch_on_a_task():
    """No task name (but as a study name in the demo's list) and no probing of a task with
    hasattr/getattr in the files above the tasks."""
    names = tasks.names()
    for file in UPPER_FLOORS:
        text = (SRC / file).read_text()
        text = re.sub(r"DEMO_STUDIES = \([^)]*\)", "", text)  # study names, not tasks
        for name in names:
            assert f'"{name}"' not in text, f"{file} names the task {name!r}"
        assert "hasattr(" not in text and "getattr(" not in text, f"{file} probes with hasattr/getattr"


def test_every_task_declares_what_the_floors_ask():
    for name in tasks.names():
        kind = tasks.get(name)
        assert kind.name == name and kind.unit and kind.main_metric and kind.train_metric
        assert kind.data_folders, f"{name}: where its data lives below $NNLAB_DATA"
        for method in ("load_source", "prepare_training", "labelled", "prepare", "build_model",
                       "steps_per_epoch", "train_batches", "collate", "step", "evaluate", "read_inputs",
                       "predict", "format_predictions", "format_evaluation"):
            assert getattr(kind, method) is not getattr(tasks.Task, method), f"{name}.{method}"


WORDS = {"pos": ["good", "great", "fine", "happy", "nice"], "neg": ["bad", "awful", "poor", "sad", "ugly"]}
FILLER = ["the", "day", "was", "a", "film", "and", "very", "it", "felt"]


def write_sentences(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        tokens = rng.choices(FILLER, k=rng.randint(2, 8)) + rng.choices(WORDS[label], k=rng.randint(1, 2))
        rng.shuffle(tokens)
        lines.append(f"{label}\t{' '.join(tokens)}")
    path.write_text("\n".join(lines) + "\n")


def test_a_fourth_task_runs_through_the_cli(tmp_path, run_cli):
    data = tmp_path / "sentences"
    data.mkdir()
    for split, n, seed in (("train", 240, 0), ("val", 60, 1), ("test", 60, 2)):
        write_sentences(data / f"{split}.tsv", n, seed)
    run = tmp_path / "run"
    r = run_cli("train", "sentence-class", "--model", "sentence-lstm", "--data", data, "--epochs", "6",
                "--out", run, "--quiet")
    assert r.code == 0, r.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "sentence-class" and summary["best_epoch"] >= 1
    assert summary["val"]["accuracy"] > 0.9  # the label words decide the class

    r = run_cli("evaluate", run, "--split", "test", "--json")
    assert r.code == 0, r.err
    test = json.loads(r.out)
    assert test["split"] == "test" and test["n"] == 60 and test["accuracy"] > 0.85
    assert set(test["per_class"]) == {"neg", "pos"}
    r = run_cli("evaluate", run)
    assert r.code == 0 and "accuracy" in r.out and "(val, 60 sentences)" in r.out

    r = run_cli("predict", run, "a good and happy film", "an awful sad day")
    assert r.code == 0, r.err
    first, second = r.out.splitlines()
    assert first.startswith("pos ") and second.startswith("neg ")

    r = run_cli("report", run, "--out", tmp_path / "report")
    assert r.code == 0, r.err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Per-class validation accuracy" in md and "sentence-lstm" in md

    r = run_cli("models")
    assert r.code == 0 and "sentence-class" in r.out and "sentence-lstm" in r.out
    bad = tmp_path / "bad.tsv"
    bad.write_text("pos\tfine\nno tab here\n")
    r = run_cli("evaluate", run, "--data", bad)
    assert r.code == 2 and "bad.tsv:2" in r.err and "Traceback" not in r.err


def test_unknown_task_lists_the_registered_ones(run_cli):
    r = run_cli("train", "imagee", "--model", "cnn", "--out", "x")
    assert r.code == 2
    assert "unknown task" in r.err and all(name in r.err for name in tasks.names())
    assert "did you mean 'image'" in r.err
