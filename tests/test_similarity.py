"""Sentence-pair similarity: readers (SICK, STS, TSV), Siamese models, CLI train/evaluate/predict,
on small files written here, and on the real SICK data in ../shared/data when it is there."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from nnlab.data.pairs import read_pairs
from nnlab.errors import NnlabError
from nnlab.models.siamese import SiameseRegressor

REAL_SICK = Path(os.environ.get("NNLAB_DATA", SHARED_DATA)) / "sick"
HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
SUBJECTS = ["a man", "a woman", "a dog", "the child", "two boys", "a cat"]
ACTIONS = ["is running", "is eating food", "is playing guitar", "is sleeping", "is swimming"]


def write_sick(path: Path, pairs: int, seed: int) -> Path:
    """Pairs whose score is learnable: 5 when subject and action match, 1 when neither does."""
    rng = random.Random(seed)
    rows = [HEADER]
    for i in range(pairs):
        s1, a1 = rng.choice(SUBJECTS), rng.choice(ACTIONS)
        s2 = s1 if rng.random() < 0.5 else rng.choice(SUBJECTS)
        a2 = a1 if rng.random() < 0.5 else rng.choice(ACTIONS)
        score = 1 + 2 * (s1 == s2) + 2 * (a1 == a2)
        rows.append(f"{i + 1}\t{s1.capitalize()} {a1}\t{s2.capitalize()} {a2}\t{score:.1f}\tNEUTRAL")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sick(tmp_path) -> Path:
    folder = tmp_path / "sick"
    folder.mkdir()
    write_sick(folder / "SICK_train.txt", 300, 0)
    write_sick(folder / "SICK_trial.txt", 60, 1)
    return folder


def test_sick_sts_and_generic_tsv(tmp_path):
    sick = read_pairs(write_sick(tmp_path / "s.txt", 5, 0))
    assert sick.layout == "sick" and sick.score_range == (1.0, 5.0) and len(sick) == 5
    assert sick.lines == [2, 3, 4, 5, 6]
    sts = tmp_path / "sts-dev.csv"
    sts.write_text('main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\t'
                   'An air plane is taking off.\n'
                   'main-news\theadlines\t2013\t0002\t0.500\tHe said "no".\tShe left.\tsource\n')
    data = read_pairs(sts)
    assert data.layout == "sts" and data.score_range == (0.0, 5.0) and data.scores == [5.0, 0.5]
    assert data.a[1] == ["He", "said", '"', "no", '"', "."]
    tsv = tmp_path / "mine.tsv"
    tsv.write_text("left\tright\tsim\nx y\tz\t0.25\n")
    mine = read_pairs(tsv, "tsv", ("left", "right", "sim"), (0.0, 1.0))
    assert mine.a == [["x", "y"]] and mine.scores == [0.25]


@pytest.mark.parametrize("rows,message", [
    ("1\tA man\tA dog\t4.5", r"s.txt:2: 4 columns, expected 5"),
    ("1\tA man\tA dog\tfour\tNEUTRAL", r"s.txt:2: score 'four' is not a number"),
    ("1\tA man\tA dog\t5.5\tNEUTRAL", r"s.txt:2: score 5.5 is outside \[1, 5\]"),
    ("1\tA man\t \t3\tNEUTRAL", r"s.txt:2: the second sentence is empty"),
])
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    path = tmp_path / "s.txt"
    path.write_text(f"{HEADER}\n{rows}\n")
    with pytest.raises(NnlabError, match=message):
        read_pairs(path)


def test_missing_header_and_generic_tsv_without_mapping(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1\tA man\tA dog\t4.5\tNEUTRAL\n")
    with pytest.raises(NnlabError, match=r"s.txt:1: header has no 'pair_ID' column"):
        read_pairs(path, "sick")
    with pytest.raises(NnlabError, match=r"data\.pair_columns and data\.score_range"):
        read_pairs(path, "tsv")


@pytest.mark.parametrize("head", ["malstm", "cosine", "mlp", "dist"])
@pytest.mark.parametrize("cell,pooling,bidirectional", [("rnn", "last", False), ("lstm", "max", True),
                                                         ("gru", "mean", False)])
def test_siamese_is_symmetric_in_range_and_padding_free(head, cell, pooling, bidirectional):
    torch.manual_seed(0)
    model = SiameseRegressor(40, (1.0, 5.0), cell=cell, hidden_sizes=(6, 5), dropout=(0.1, 0.0),
                             bidirectional=bidirectional, pooling=pooling, head=head).eval()
    a = torch.randint(2, 40, (3, 7))
    b = torch.randint(2, 40, (3, 5))
    a_len, b_len = torch.tensor([7, 4, 2]), torch.tensor([5, 5, 1])
    a[1, 4:], a[2, 2:], b[2, 1:] = 0, 0, 0
    ab = model(a, a_len, b, b_len)
    torch.testing.assert_close(ab, model(b, b_len, a, a_len))  # shared weights, symmetric heads
    assert ((ab >= 1) & (ab <= 5)).all()
    alone = model(a[1:2, :4], a_len[1:2], b[1:2], b_len[1:2])  # no padding at all
    torch.testing.assert_close(ab[1:2], alone, rtol=1e-5, atol=1e-6)
    onehot = SiameseRegressor(40, (0.0, 1.0), inputs="onehot", head=head).eval()
    assert onehot(a, a_len, b, b_len).shape == (3,)


def test_train_evaluate_predict(run_cli, sick, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "similarity", "--model", "lstm", "--data", sick, "--epochs", "8",
                "--set", "model.hidden_sizes=[16]", "--set", "optim.lr=0.01", "--out", run, "--quiet")
    assert r.code == 0, r.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "similarity" and summary["best_val_pearson"] > 0.8
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"train_mse", "val_pearson", "val_spearman", "val_mse"} <= set(history[0])
    assert (run / "plots" / "scatter_val.png").is_file()
    val = json.loads((run / "eval" / "val.json").read_text())
    assert len(val["predictions"]) == len(val["gold"]) == 60

    r = run_cli("evaluate", run, "--data", sick / "SICK_trial.txt", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert {"pearson", "spearman", "mse"} <= set(result)
    assert result["pearson"] == pytest.approx(summary["val"]["pearson"], abs=1e-6)
    assert "Pearson r" in run_cli("evaluate", run).out

    r = run_cli("predict", run, "A dog is running", "A dog is running", "--json")
    assert r.code == 0, r.err
    same = json.loads(r.out)[0]["score"]
    other = json.loads(run_cli("predict", run, "A dog is running", "Two boys are sleeping",
                               "--json").out)[0]["score"]
    assert 1 <= other < same <= 5
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("A cat is eating food\tA cat is eating food\nA man is swimming\tThe child is sleeping\n")
    r = run_cli("predict", run, "--pairs", pairs)
    assert r.code == 0, r.err
    assert len(r.out.strip().splitlines()) == 2
    assert run_cli("predict", run, "only one sentence").code == 2


def test_every_similarity_model_and_onehot_inputs_train(run_cli, sick, tmp_path):
    from nnlab import models

    for name in models.names("similarity"):
        r = run_cli("train", "similarity", "--model", name, "--data", sick, "--epochs", "1",
                    "--set", "data.limit=64", "--out", tmp_path / name, "--quiet")
        assert r.code == 0, f"{name}: {r.err}"
    if importlib.util.find_spec("onnxruntime") and (tmp_path / "minilm-cross").is_dir():
        r = run_cli("export", tmp_path / "minilm-cross", "--out", tmp_path / "cross.onnx")
        assert r.code == 0 and "same predictions" in r.out, r.err
        assert (tmp_path / "cross.tokenizer.json").is_file()
    r = run_cli("train", "similarity", "--model", "rnn", "--data", sick, "--epochs", "1",
                "--set", "model.inputs='onehot'", "--out", tmp_path / "onehot", "--quiet")
    assert r.code == 0, r.err


@pytest.mark.parametrize("row,message", [
    ("1\tA man\tA dog\t9\tNEUTRAL", r"SICK_train.txt:3: score 9 is outside \[1, 5\]"),
    ("1\tA man\tA dog\t3", r"SICK_train.txt:3: 4 columns, expected 5"),
])
def test_bad_training_file_one_line_no_run_folder(run_cli, tmp_path, row, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "SICK_train.txt").write_text(f"{HEADER}\n1\tA man\tA dog\t3\tNEUTRAL\n{row}\n")
    r = run_cli("train", "similarity", "--model", "lstm", "--data", folder, "--out", tmp_path / "run")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert re.search(message, r.err), r.err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.skipif(not REAL_SICK.is_dir(), reason="no ../shared/data/sick")
def test_real_sick_files_read():
    train = read_pairs(REAL_SICK / "SICK_train.txt")
    trial = read_pairs(REAL_SICK / "SICK_trial.txt")
    assert len(train) == 4500 and len(trial) == 500
    assert min(train.scores) >= 1 and max(train.scores) <= 5


def test_target_distribution_of_the_dist_head():
    from nnlab.models.siamese import target_distribution

    levels = torch.arange(1.0, 6.0)
    dist = target_distribution(torch.tensor([3.4, 1.0, 5.0]), levels)
    torch.testing.assert_close(dist, torch.tensor([[0, 0, 0.6, 0.4, 0], [1.0, 0, 0, 0, 0],
                                                   [0, 0, 0, 0, 1.0]]))
    assert torch.allclose((dist * levels).sum(1), torch.tensor([3.4, 1.0, 5.0]))


@pytest.mark.parametrize("score_range,levels", [((1.0, 5.0), 5), ((0.0, 5.0), 6), ((0.0, 2.5), 11),
                                                ((0.0, 1.0), 11)])
def test_dist_head_levels_span_the_whole_range(score_range, levels):
    model = SiameseRegressor(10, score_range, head="dist")
    assert len(model.levels) == levels
    assert model.levels[0] == score_range[0] and model.levels[-1] == score_range[1]


def test_sts_folder_and_single_file_carve_out(tmp_path):
    from nnlab.config import RunConfig
    from nnlab.tasks.similarity import load_pairs

    folder = tmp_path / "sts"
    folder.mkdir()
    rows = "".join(f"g\tf\t2012\t{i:04d}\t{i % 6}.0\tA man {i}.\tA dog {i}.\n" for i in range(30))
    (folder / "sts-train.csv").write_text(rows)
    (folder / "sts-dev.csv").write_text("".join(rows.splitlines(keepends=True)[:5]))
    source = load_pairs(str(folder), RunConfig(task="similarity"))
    assert source.train.layout == "sts" and source.train.score_range == (0.0, 5.0)
    assert "validation file sts-dev.csv" in source.format
    single = load_pairs(str(folder / "sts-train.csv"), RunConfig(task="similarity"))
    assert len(single.train) == 27 and len(single.val) == 3  # data.val_size 0.1, seeded
    assert not {t for t in single.train.texts} & {t for t in single.val.texts}
