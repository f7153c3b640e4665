"""The keyphrase task end to end: train, evaluate, predict through the CLI, on tiny CoNLL files
written here, and on the real data in ../shared/data when it is there."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from nnlab.data.tags import tag_set
from nnlab.models.tagger import SequenceTagger
from nnlab.tasks.keyphrase import O_BIASES

REAL_KEYPHRASE = Path(os.environ.get("NNLAB_DATA", SHARED_DATA)) / "keyphrase"
PHRASES = [["neural", "network"], ["support", "vector", "machine"], ["graph"], ["genetic", "algorithm"]]
FILLER = ["the", "we", "study", "a", "new", "method", "for", "with", "results", "show", "and", "of"]


def write_corpus(path: Path, docs: int, seed: int) -> Path:
    """Documents of filler words with known keyphrases sprinkled in (BIO, untyped tags)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(docs):
        for _ in range(rng.randint(3, 9)):
            if rng.random() < 0.35:
                phrase = rng.choice(PHRASES)
                lines += [f"{w}\t{'B' if i == 0 else 'I'}-KEY" for i, w in enumerate(phrase)]
            else:
                lines.append(f"{rng.choice(FILLER)}\tO")
        lines.append(".\tO")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "kp"
    folder.mkdir()
    write_corpus(folder / "train.txt", 60, 0)
    write_corpus(folder / "valid.txt", 20, 1)
    return folder


def test_train_evaluate_predict(run_cli, corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    r = run_cli("train", "keyphrase", "--model", "bilstm-crf", "--data", corpus, "--epochs", "6",
                "--set", "optim.lr=0.01", "--set", "model.dropout=0.0", "--out", run, "--quiet")
    assert r.code == 0, r.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "keyphrase" and summary["best_val_span_f1"] > 0.8
    # the O offset is chosen on validation after training, never making validation F1 worse
    assert summary["o_bias"] in O_BIASES
    assert summary["val"]["span_f1"] >= summary["val_span_f1_without_o_bias"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"train_token_accuracy", "val_span_f1", "val_token_f1"} <= set(history[0])
    assert (run / "plots" / "curves.png").is_file()

    r = run_cli("evaluate", run, "--data", corpus / "valid.txt", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    for key in ("span_f1", "span_precision", "span_recall", "token_accuracy", "token_f1"):
        assert 0 <= result[key] <= 1
    assert result["span_f1"] == pytest.approx(summary["val"]["span_f1"])
    assert "keyphrases (exact match): F1" in run_cli("evaluate", run).out

    text = "We study a neural network and  a graph ."
    r = run_cli("predict", run, text, "--json")
    assert r.code == 0, r.err
    found = json.loads(r.out)[0]["keyphrases"]
    assert [k["text"] for k in found] == ["neural network", "graph"]
    assert all(text[k["start"] : k["end"]] == k["text"] for k in found)
    assert "neural network; graph" in run_cli("predict", run, text).out
    doc = tmp_path / "doc.txt"
    doc.write_text("a genetic algorithm .", encoding="utf-8")
    assert "genetic algorithm" in run_cli("predict", run, doc, "--files").out
    monkeypatch.setattr("sys.stdin", io.StringIO("results of a support vector machine ."))
    assert "support vector machine" in run_cli("predict", run, "-").out


def test_every_tagger_variant_trains(run_cli, corpus, tmp_path):
    from nnlab import models

    for name in models.names("keyphrase"):
        r = run_cli("train", "keyphrase", "--model", name, "--data", corpus, "--epochs", "1",
                    "--set", "model.hidden_sizes=[8]", "--out", tmp_path / name, "--quiet")
        assert r.code == 0, f"{name}: {r.err}"


def test_glove_text_file_and_frozen_vectors(run_cli, corpus, tmp_path):
    vectors = tmp_path / "vec.txt"
    vectors.write_text("".join(f"{w} {' '.join(str((i * 7 + j) % 5 - 2) for j in range(6))}\n"
                               for i, w in enumerate([*FILLER, "neural", "graph"])))
    run = tmp_path / "run"
    r = run_cli("train", "keyphrase", "--model", "bilstm", "--data", corpus, "--epochs", "1",
                "--embeddings", vectors, "--set", "data.freeze_embeddings=true", "--out", run)
    assert r.code == 0, r.err
    assert "vec.txt (6d) covers" in r.err
    info = json.loads((run / "config.json").read_text())["task_info"]
    assert info["embeddings"]["dim"] == 6 and info["embeddings"]["found"] == 14
    from safetensors.torch import load_file

    weights = load_file(run / "best.safetensors")["words.weight"]
    items = info["vocab"]["items"]
    assert weights[items.index("graph")].tolist() == [(13 * 7 + j) % 5 - 2 for j in range(6)]


@pytest.mark.parametrize("args,message", [
    (["--data", "{bad}"], r"bad\.txt:2: expected 'token<TAB>tag', found no tag"),
    (["--embeddings", "{vec}"], r"vec\.txt:2: 2 values, but the first vector has 3"),
    (["--set", "model.cell='lstmx'"], r"model.cell: unknown cell 'lstmx'"),
    (["--set", "data.encoding='bilou'"], r"data.encoding: unknown value 'bilou'"),
])
def test_bad_input_one_line_and_no_run_folder(run_cli, corpus, tmp_path, args, message):
    (tmp_path / "bad.txt").write_text("a\tO\nb\n")
    (tmp_path / "vec.txt").write_text("a 1 2 3\nb 1 2\n")
    args = [a.format(bad=tmp_path / "bad.txt", vec=tmp_path / "vec.txt") for a in args]
    if "--data" not in args:
        args += ["--data", str(corpus)]
    r = run_cli("train", "keyphrase", "--model", "bilstm", "--epochs", "1", *args,
                "--out", tmp_path / "run")
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert pytest.importorskip("re").search(message, r.err), r.err
    assert not (tmp_path / "run").exists()


def test_predict_refuses_empty_text(run_cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "keyphrase", "--model", "bigru", "--data", corpus, "--epochs", "1",
                   "--out", run).code == 0
    r = run_cli("predict", run, "   ")
    assert r.code == 2 and "text 1: empty" in r.err


def test_padding_does_not_change_a_sequences_scores():
    """Packed RNNs: a short sequence scores the same alone as beside a longer one."""
    torch.manual_seed(0)
    tags = tag_set(["KEY"], "bio")
    for chars in ("none", "cnn", "lstm"):
        model = SequenceTagger(30, tags, "bio", num_chars=12, hidden_sizes=(5, 4), chars=chars,
                               crf=True).eval()
        words = torch.randint(2, 30, (2, 9))
        char_ids = torch.randint(1, 12, (2, 9, 4))
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[1, 5:] = False
        words[1, 5:], char_ids[1, 5:] = 0, 0
        both = model(words, char_ids, mask)
        alone = model(words[1:, :5], char_ids[1:, :5], mask[1:, :5])
        torch.testing.assert_close(both[1, :5], alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_KEYPHRASE.is_dir(), reason="no ../shared/data/keyphrase")
def test_real_keyphrase_files_read():
    from nnlab.data.conll import read_conll

    inspec = read_conll(REAL_KEYPHRASE / "inspec" / "train.txt")
    assert len(inspec) == 1000 and inspec.scheme == "bio" and inspec.types == ["KEY"]
    assert sum(len(s) for s in inspec.spans) == 9790  # one span per B-KEY
    assert max(len(t) for t in inspec.tokens) > 500  # long documents, read whole
    semeval = read_conll(REAL_KEYPHRASE / "semeval2017" / "train.txt")
    assert semeval.types == ["Material", "Process", "Task"]


@pytest.mark.parametrize("crf", [False, True])
def test_the_offset_sweep_decodes_as_each_offset_alone(crf):
    """The validation sweep decodes every O offset in one batch: the same tags as one call
    per offset (Viterbi for the CRF, argmax without)."""
    from nnlab.models.tagger import SequenceTagger
    from nnlab.tasks.keyphrase import O_BIASES, _decode_at

    torch.manual_seed(0)
    tagger = SequenceTagger(20, tag_set(["KEY"], "bioes"), "bioes", crf=crf)
    emissions = torch.randn(3, 6, 5) * 2
    mask = torch.arange(6).unsqueeze(0) < torch.tensor([[6], [2], [4]])
    swept = _decode_at(tagger, emissions, mask, O_BIASES)
    for k, bias in enumerate(O_BIASES):
        assert torch.equal(swept[k], tagger.decode(emissions, mask, bias))
    assert not all(torch.equal(swept[0], s) for s in swept)  # the offsets change some tags
