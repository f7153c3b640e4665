"""Resume for the text tasks: a keyphrase and a similarity run interrupted after an epoch and
resumed end with the weights of an uninterrupted run (variable-length batches, lookahead and
the O-offset calibration included)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_keyphrase import write_corpus
from test_similarity import write_sick

from nnlab.train import Trainer


@pytest.fixture
def text_data(tmp_path):
    kp = tmp_path / "kp"
    kp.mkdir()
    write_corpus(kp / "train.txt", 40, 0)
    write_corpus(kp / "valid.txt", 10, 1)
    sick = tmp_path / "sick"
    sick.mkdir()
    write_sick(sick / "SICK_train.txt", 120, 0)
    write_sick(sick / "SICK_trial.txt", 30, 1)
    return {"keyphrase": kp, "similarity": sick}


@pytest.mark.parametrize("task,model", [("keyphrase", "bilstm-crf"), ("similarity", "lstm")])
def test_interrupted_text_run_resumes_exactly(run_cli, text_data, tmp_path, monkeypatch, task, model):
    args = ["train", task, "--model", model, "--data", text_data[task], "--epochs", "3",
            "--set", "model.hidden_sizes=[8]", "--set", "train.lookahead_start_epoch=1",
            "--set", "train.lookahead_every=2", "--quiet"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert run_cli(*args, "--out", straight).code == 0

    original = Trainer._log_epoch

    def stop_after_first(self, record):
        original(self, record)
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_log_epoch", stop_after_first)
    assert run_cli(*args, "--out", broken).code == 130
    assert not (broken / "summary.json").exists()
    monkeypatch.setattr(Trainer, "_log_epoch", original)
    r = run_cli("train", "--resume", broken, "--quiet")
    assert r.code == 0, r.err
    a, b = load_file(straight / "best.safetensors"), load_file(broken / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (broken / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [x["val_loss"] for x in rows] == [x["val_loss"] for x in want]
    assert json.loads((broken / "summary.json").read_text())["val"] == \
        json.loads((straight / "summary.json").read_text())["val"]
