"""Knowledge distillation for similarity (`--set data.teacher=RUN`): the extra pairs are new
pairs of training sentences only, the teacher's scores are its own predictions, cached, and
a student trains on them; a wrong teacher is one line and no run folder."""

from __future__ import annotations

import json
import os

import torch
from test_similarity import sick, write_sick  # noqa: F401  (the fixture)

from nnlab.data.pair_augment import extra_pairs
from nnlab.data.pairs import read_pairs
from nnlab.tasks.similarity import SimilarityTask


def test_extra_pairs_are_new_pairs_of_training_sentences(tmp_path):
    train = read_pairs(write_sick(tmp_path / "SICK_train.txt", 300, 0))
    pairs = extra_pairs(train, 200, seed="x")
    assert 150 <= len(pairs) <= 200 and len(pairs.a) == len(pairs.texts) == len(pairs.scores)
    seen = {frozenset(p) for p in train.texts}
    sentences = {t for p in train.texts for t in p}
    assert not seen & {frozenset(p) for p in pairs.texts}
    assert len({frozenset(p) for p in pairs.texts}) == len(pairs)  # each at most once
    dropped = 0
    for (x, y), tokens_x, tokens_y in zip(pairs.texts, pairs.a, pairs.b, strict=True):
        assert x != y and x in sentences  # the first is always a training sentence as it was
        if y not in sentences:  # a training sentence less one word
            dropped += 1
            assert tokens_y == [w for w in tokens_x if w in tokens_y] and len(tokens_y) == len(tokens_x) - 1
    assert dropped >= 20
    again = extra_pairs(train, 200, seed="x")
    assert again.texts == pairs.texts and extra_pairs(train, 200, seed="y").texts != pairs.texts


def test_student_learns_from_a_teachers_scores(run_cli, sick, tmp_path, monkeypatch):  # noqa: F811
    teacher = tmp_path / "teacher"
    r = run_cli("train", "similarity", "--model", "lstm", "--data", sick, "--epochs", "2",
                "--out", teacher, "--quiet")
    assert r.code == 0, r.err
    student = tmp_path / "student"
    r = run_cli("train", "similarity", "--model", "rnn", "--data", sick, "--epochs", "1",
                "--set", f"data.teacher='{teacher}'", "--set", "data.teacher_pairs=120",
                "--out", student)
    assert r.code == 0, r.err
    assert "pairs scored by the teacher lstm" in r.err  # the console's progress lines
    about = json.loads((student / "config.json").read_text())["task_info"]["teacher"]
    assert about["model"] == "lstm" and 100 <= about["pairs"] <= 120
    (cached,) = (tmp_path / "cache" / "teacher").glob("*.pt")
    scores = torch.load(cached, weights_only=True)
    assert scores.shape == (about["pairs"],) and float(scores.std()) > 0
    # the cached scores are the teacher's own predictions on those pairs
    train = read_pairs(sick / "SICK_train.txt")
    pairs = extra_pairs(train, 120, seed=train.fingerprint())
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{x}\t{y}\n" for x, y in pairs.texts[:10]))
    r = run_cli("predict", teacher, "--pairs", tsv, "--json")
    assert r.code == 0, r.err
    predicted = [p["score"] for p in json.loads(r.out)]
    assert torch.allclose(scores[:10], torch.tensor(predicted), atol=1e-3)
    # a second student reads them back: the teacher is not run again, and the hit counts as a
    # use of the cache entry (its mtime, for `nnlab cache clean --older-than`)
    stamp, inode = cached.stat().st_mtime_ns, cached.stat().st_ino
    os.utime(cached, ns=(stamp - 10**12, stamp - 10**12))  # 1,000 s ago

    def no_scoring(*args, **kwargs):
        raise AssertionError("the teacher scored the pairs again")

    monkeypatch.setattr(SimilarityTask, "score_texts", no_scoring)
    r = run_cli("train", "similarity", "--model", "rnn", "--data", sick, "--epochs", "1",
                "--set", f"data.teacher='{teacher}'", "--set", "data.teacher_pairs=120",
                "--out", tmp_path / "again", "--quiet")
    assert r.code == 0, r.err
    assert cached.stat().st_ino == inode and cached.stat().st_mtime_ns > stamp - 10**12


def test_several_teachers_give_the_mean_of_their_scores(run_cli, sick, tmp_path):  # noqa: F811
    for name, model in (("t1", "lstm"), ("t2", "rnn")):
        r = run_cli("train", "similarity", "--model", model, "--data", sick, "--epochs", "1",
                    "--out", tmp_path / name, "--quiet")
        assert r.code == 0, r.err
    r = run_cli("train", "similarity", "--model", "rnn", "--data", sick, "--epochs", "1",
                "--set", f"data.teacher=['{tmp_path / 't1'}', '{tmp_path / 't2'}']",
                "--set", "data.teacher_pairs=60", "--out", tmp_path / "student")
    assert r.code == 0, r.err
    assert "pairs scored by the teachers lstm, rnn" in r.err
    about = json.loads((tmp_path / "student" / "config.json").read_text())["task_info"]["teacher"]
    assert [t["model"] for t in about["runs"]] == ["lstm", "rnn"]
    each = [torch.load(f, weights_only=True) for f in (tmp_path / "cache" / "teacher").glob("*.pt")]
    assert len(each) == 2 and not torch.allclose(each[0], each[1])
    assert abs(about["mean_score"] - float(torch.stack(each).mean())) < 1e-4
    r = run_cli("train", "similarity", "--model", "rnn", "--data", sick, "--epochs", "1",
                "--set", "data.teacher=[3]", "--out", tmp_path / "bad")
    assert r.code == 2 and "data.teacher" in r.err and not (tmp_path / "bad").exists()


def test_a_missing_teacher_is_one_line_and_no_run(run_cli, sick, tmp_path):  # noqa: F811
    r = run_cli("train", "similarity", "--model", "rnn", "--data", sick, "--epochs", "1",
                "--set", f"data.teacher='{tmp_path / 'nope'}'", "--out", tmp_path / "run")
    assert r.code == 2 and "data.teacher:" in r.err and "no such run folder" in r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_taught_config_trains_the_lstm_from_a_teacher_run():
    from pathlib import Path

    from nnlab.experiment import resolve_config

    file = Path(__file__).resolve().parents[1] / "experiments" / "similarity" / "lstm-glove-taught.toml"
    cfg = resolve_config(None, None, config_file=str(file))
    assert cfg.task == "similarity" and cfg.model.name == "lstm"
    assert cfg.data.embeddings == "glove-6b-50d" and cfg.data.teacher == "runs/sick-teacher"
