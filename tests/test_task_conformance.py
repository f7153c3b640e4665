"""Every registered task, the fourth one (tests/sentence_class.py, registered for the whole
run in conftest) included, through every command: train, evaluate, predict, models, serve,
ensemble and export. Each ends in a clean result, or, for a capability the task does not declare
(`nnlab.tasks.capabilities`), in the command's one-line refusal: never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentence_class
from test_task_registry import write_sentences

from conftest import png_bytes
from nnlab import models, tasks
from nnlab.tasks.capabilities import Ensemblable, Exportable, ModelExamples, Servable, has

SMALL = {"image": "cnn", "keyphrase": "bilstm", "similarity": "lstm"}  # a quick model each
INPUTS = {"keyphrase": ["Neural networks label sequences with conditional random fields."],
          "similarity": ["A man is playing a guitar", "A person plays an instrument"],
          sentence_class.NAME: ["a good and happy film"]}


def _data(name: str, tmp_path: Path) -> str:
    if name == sentence_class.NAME:
        folder = tmp_path / "sentences"
        folder.mkdir()
        for split, n, seed in (("train", 120, 0), ("val", 30, 1), ("test", 30, 2)):
            write_sentences(folder / f"{split}.tsv", n, seed)
        return str(folder)
    return "generated"


def _inputs(name: str, tmp_path: Path) -> list[str]:
    if name == "image":
        (tmp_path / "a.png").write_bytes(png_bytes())
        return [str(tmp_path / "a.png")]
    return INPUTS[name]


def _one_line_refusal(r, words: str) -> None:
    assert r.code == 2, r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert words in r.err, r.err


def test_the_built_in_tasks_have_every_capability_and_the_fourth_none():
    for name in ("image", "keyphrase", "similarity"):
        assert all(has(tasks.get(name), c) for c in (Servable, Exportable, ModelExamples, Ensemblable)), name
    kind = tasks.get(sentence_class.NAME)
    assert not any(has(kind, c) for c in (Servable, Exportable, ModelExamples, Ensemblable))


@pytest.mark.parametrize("name", tasks.names())
def test_every_task_through_every_command(name, tmp_path, run_cli):
    kind = tasks.get(name)
    model = SMALL.get(name) or models.names(name)[0]
    run = tmp_path / "run"
    r = run_cli("train", name, "--model", model, "--data", _data(name, tmp_path), "--epochs", "1",
                "--set", "data.limit=200", "--out", run, "--quiet")
    assert r.code == 0, r.err
    assert json.loads((run / "summary.json").read_text())["task"] == name

    r = run_cli("evaluate", run, "--json")
    assert r.code == 0, r.err
    assert kind.main_metric in json.loads(r.out)

    r = run_cli("predict", run, *_inputs(name, tmp_path), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)

    r = run_cli("models", model)
    if has(kind, ModelExamples):
        assert r.code == 0 and "parameters:" in r.out, r.err
    else:
        _one_line_refusal(r, f"the {name} task cannot describe its models")

    from nnlab.serve.app import Limits, load_served

    if has(kind, Servable):
        served = load_served([str(run)], "cpu", Limits())
        assert served[0].task.name == name
    else:
        r = run_cli("serve", run, "--port", "8765")
        _one_line_refusal(r, f"the {name} task cannot be served")

    twin = tmp_path / "twin"  # the same run under another path: an ensemble of two copies
    shutil.copytree(run, twin)
    rule = ["--rule", "mean-emissions"] if name == "keyphrase" else []  # the run's own decoding
    r = run_cli("ensemble", run, twin, "--out", tmp_path / "ens", "--json", *rule)
    if has(kind, Ensemblable):
        assert r.code == 0, r.err
        alone = json.loads(run_cli("evaluate", run, "--json").out)[kind.main_metric]
        both = json.loads(run_cli("evaluate", tmp_path / "ens", "--json").out)
        assert both[kind.main_metric] == pytest.approx(alone, abs=1e-6) and both["gain"] == pytest.approx(0)
    else:
        _one_line_refusal(r, f"the {name} task cannot combine runs into an ensemble")
        assert not (tmp_path / "ens").exists()

    pytest.importorskip("onnxruntime")
    r = run_cli("export", run, "--out", tmp_path / "m.onnx")
    if has(kind, Exportable):
        assert r.code == 0 and (tmp_path / "m.onnx").is_file(), r.err
    else:
        _one_line_refusal(r, f"the {name} task cannot be exported")
        assert not (tmp_path / "m.onnx").exists()
