"""Ensembles of runs (`nnlab ensemble`): the combination rules against hand-computed means,
valid tag sequences from both tagger rules, ONNX parity, evaluate/predict/serve through the
CLI and the app, and one-line refusals."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnlab import ensemble, experiment
from nnlab.data.tags import allowed_transitions
from nnlab.shipped.viterbi import viterbi

TEXT = "We train recurrent neural networks for keyphrase extraction from scientific abstracts."
PAIR = ["A man is playing a guitar.", "Someone plays the guitar."]


def as_json(result) -> dict | list:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_similarity_is_the_mean_of_its_members_scores(runs, run_cli, tmp_path):
    out = tmp_path / "ens"
    made = as_json(run_cli("ensemble", runs["sim0"], runs["simrnn"], "--out", out, "--json"))
    alone = [as_json(run_cli("evaluate", runs[r], "--json")) for r in ("sim0", "simrnn")]
    both = as_json(run_cli("evaluate", out, "--json"))
    mean = (np.array(alone[0]["predictions"]) + np.array(alone[1]["predictions"])) / 2
    assert np.abs(np.array(both["predictions"]) - mean).max() < 2e-5
    # each member's figure inside the ensemble's result is its own `nnlab evaluate` figure
    assert [m["pearson"] for m in made["members"]] == pytest.approx([a["pearson"] for a in alone], abs=1e-6)
    assert made["pearson"] == pytest.approx(both["pearson"], abs=1e-9)
    assert made["gain"] == pytest.approx(both["pearson"] - (alone[0]["pearson"] + alone[1]["pearson"]) / 2)
    scored = as_json(run_cli("predict", out, *PAIR, "--json"))[0]["score"]
    singles = [as_json(run_cli("predict", runs[r], *PAIR, "--json"))[0]["score"] for r in ("sim0", "simrnn")]
    assert scored == pytest.approx(sum(singles) / 2, abs=1e-4)


def test_image_probabilities_are_the_weighted_mean(runs, run_cli, tmp_path):
    out = tmp_path / "ens"
    assert run_cli("ensemble", runs["img0"], runs["img1"], "--out", out, "--weights", "3,1").code == 0
    files = []
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        (tmp_path / f"{i}.png").write_bytes(buffer.getvalue())
        files.append(tmp_path / f"{i}.png")

    def probabilities(run: Path) -> np.ndarray:  # (images, classes), classes by name
        found = as_json(run_cli("predict", run, *files, "--top-k", "100", "--json"))
        return np.array([[p["probability"] for p in sorted(r["top"], key=lambda t: t["class"])]
                         for r in found])

    expected = 0.75 * probabilities(runs["img0"]) + 0.25 * probabilities(runs["img1"])
    assert np.abs(probabilities(out) - expected).max() < 2e-6
    alone = [as_json(run_cli("evaluate", runs[r], "--json"))["accuracy"] for r in ("img0", "img1")]
    both = as_json(run_cli("evaluate", out, "--json"))
    assert [m["accuracy"] for m in both["members"]] == pytest.approx(alone)
    assert both["per_class"] and both["rule"] == "mean-probabilities"


def test_tagger_mean_emissions_decode_as_viterbi_on_the_averaged_crf(runs, run_cli, tmp_path):
    out = tmp_path / "ens"
    assert run_cli("ensemble", runs["kp0"], runs["kp1"], runs["kpsoft"], "--out", out,
                   "--weights", "2,1,1", "--rule", "mean-emissions").code == 0
    combined = ensemble.load(out, "cpu")
    task = combined.task
    examples, where = task.labelled(None, "val")
    outputs = [m.task.outputs(m.model, m.task.prepare(examples, where)) for m in combined.members]
    mixed = task.combine(outputs, combined.weights, "mean-emissions")
    w = [0.5, 0.25, 0.25]
    crfs = [m.model.crf for m in combined.members]
    scores = [[t.detach() for t in c._scores()] if c is not None else None for c in crfs]
    assert scores[2] is None  # the softmax tagger counts as a CRF of zero transitions
    start, trans, end = (sum(w[i] * scores[i][k] for i in range(2)) for k in range(3))
    from nnlab.tasks import keyphrase_ensemble
    paths, _ = keyphrase_ensemble.decode(mixed)
    for i in range(len(examples)):
        by_hand = sum(wi * o.emissions[i] for wi, o in zip(w, outputs, strict=True))
        assert torch.allclose(mixed.emissions[i], by_hand, atol=1e-6)
        expected = viterbi(by_hand.numpy(), start.tolist(), trans.tolist(), end.tolist())
        assert paths[i].tolist() == expected
    result = as_json(run_cli("evaluate", out, "--json"))
    alone = [as_json(run_cli("evaluate", runs[r], "--json"))["span_f1"] for r in ("kp0", "kp1", "kpsoft")]
    assert [m["span_f1"] for m in result["members"]] == pytest.approx(alone)


@pytest.mark.parametrize("rule", ["mean-emissions", "mean-marginals"])
def test_both_tagger_rules_decode_valid_tag_sequences(runs, run_cli, tmp_path, rule):
    out = tmp_path / "ens"
    assert run_cli("ensemble", runs["kp0"], runs["kp1"], runs["kpsoft"], "--out", out,
                   "--rule", rule).code == 0
    combined = ensemble.load(out, "cpu")
    task = combined.task
    examples, where = task.labelled(None, "val")
    outputs = [m.task.outputs(m.model, m.task.prepare(examples, where)) for m in combined.members]
    from nnlab.tasks import keyphrase_ensemble
    paths, _ = keyphrase_ensemble.decode(task.combine(outputs, combined.weights, rule))
    tags = task.info().tags
    allowed, may_start, _may_end = allowed_transitions(tags, task.info().encoding)
    for path in paths:
        p = path.tolist()
        assert may_start[p[0]], [tags[t] for t in p]
        assert all(allowed[a][b] for a, b in itertools.pairwise(p)), [tags[t] for t in p]
    # emissions whose per-token argmax is invalid (O then I-KEY): both rules must not follow it
    o, b, i = tags.index("O"), tags.index("B-KEY"), tags.index("I-KEY")
    crf = combined.members[0].model.crf
    start, trans, end = (t.detach() for t in crf._scores())
    bad = torch.zeros(4, len(tags))
    bad[[0, 1, 2, 3], [o, i, i, o]] = 3.0
    bad[1, b] = 2.5
    argmax = bad.argmax(1).tolist()
    assert not allowed[argmax[0]][argmax[1]]
    zero = (torch.zeros_like(t) for t in (start, trans, end))  # a softmax tagger's
    members = [keyphrase_ensemble.TaggerOutputs([bad], start, trans, end),
               keyphrase_ensemble.TaggerOutputs([bad * 0.5], *zero)]
    path = keyphrase_ensemble.decode(keyphrase_ensemble.combine(members, [0.5, 0.5], rule))[0][0].tolist()
    assert all(allowed[a][b] for a, b in itertools.pairwise(path)), [tags[t] for t in path]
    phrases = as_json(run_cli("predict", out, TEXT, "--json"))[0]["keyphrases"]
    assert all(TEXT[k["start"]:k["end"]] == k["text"] for k in phrases)


def test_onnx_graph_holds_every_member_and_the_rule(runs, run_cli, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    for members, name in (([runs["sim0"], runs["sim1"]], "sim"), ([runs["img0"], runs["img1"]], "img"),
                          ([runs["kp0"], runs["kpsoft"]], "kp")):
        folder = tmp_path / name
        rule = ["--rule", "mean-emissions"] if name == "kp" else []  # the rule a graph holds
        assert run_cli("ensemble", *members, "--out", folder, *rule).code == 0
        r = run_cli("export", folder, "--out", tmp_path / f"{name}.onnx")
        assert r.code == 0, r.err
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        assert meta["parity"]["same_predictions"] and meta["parity"]["max_abs_diff"] <= 1e-4
        assert len(meta["ensemble"]["members"]) == 2
    # the graph against the PyTorch ensemble: the members' own scores, averaged
    session = ort.InferenceSession(str(tmp_path / "sim.onnx"), providers=["CPUExecutionProvider"])
    combined = ensemble.load(tmp_path / "sim", "cpu")
    specs = [m.task.export_spec(m.model) for m in combined.members]
    x = specs[0].inputs(4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        by_hand = sum(0.5 * s.module(*x.values()) for s in specs)
    got = session.run(None, {k: v.numpy() for k, v in x.items()})[0]
    assert np.abs(got - by_hand.numpy()).max() < 1e-4
    meta = json.loads((tmp_path / "kp.json").read_text())
    assert meta["crf"] is not None and meta["decode"].startswith("viterbi")


def test_members_reading_pairs_otherwise_export_with_input_sets(runs, run_cli, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    folder = tmp_path / "sim"
    assert run_cli("ensemble", runs["sim0"], runs["simvocab"], "--out", folder, "--weights", "3,1").code == 0
    r = run_cli("export", folder, "--out", tmp_path / "sim.onnx")
    assert r.code == 0, r.err
    meta = json.loads((tmp_path / "sim.json").read_text())
    sets = meta["input_sets"]
    assert [s["inputs"] for s in sets] == [[f"set{k}_{n}" for n in ("a", "a_len", "b", "b_len")]
                                           for k in (0, 1)]
    assert sets[0]["vocabulary"] != sets[1]["vocabulary"] and "vocabulary" not in meta
    assert meta["score_range"] and meta["parity"]["same_predictions"]
    # the graph against the members by hand: each on its own set of inputs, weighted 3:1
    combined = ensemble.load(folder, "cpu")
    specs = [m.task.export_spec(m.model) for m in combined.members]
    x = [s.inputs(4, torch.Generator().manual_seed(3 + i)) for i, s in enumerate(specs)]
    with torch.no_grad():
        by_hand = 0.75 * specs[0].module(*x[0].values()) + 0.25 * specs[1].module(*x[1].values())
    feed = {f"set{i}_{k}": v.numpy() for i in (0, 1) for k, v in x[i].items()}
    session = ort.InferenceSession(str(tmp_path / "sim.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, feed)[0] - by_hand.numpy()).max() < 1e-4
    # taggers' emissions are per word of their inputs: members reading words otherwise are refused
    kp = tmp_path / "kp"
    made = run_cli("ensemble", runs["kp0"], runs["kpvocab"], "--out", kp, "--rule", "mean-emissions")
    assert made.code == 0
    one_line(run_cli("export", kp, "--out", tmp_path / "kp.onnx"), "kpvocab", "vocabulary differs")
    assert not (tmp_path / "kp.onnx").exists()


def test_serving_an_ensemble_answers_as_predict_does(runs, run_cli, tmp_path):
    from fastapi.testclient import TestClient

    from nnlab.serve.app import Limits, create_app, load_served
    folder = tmp_path / "ens"
    assert run_cli("ensemble", runs["sim0"], runs["simrnn"], "--out", folder).code == 0
    limits = Limits(max_body=1 << 20, wait=0.01)
    served = load_served([f"pairs={folder}"], "cpu", limits)
    with TestClient(create_app(served, limits), base_url="http://127.0.0.1:8000") as client:
        listed = client.get("/v1/models").json()[0]
        assert listed["model"].startswith("ensemble of 2") and listed["validation"] is not None
        r = client.post("/v1/models/pairs/predict", json={"pairs": [PAIR]})
        assert r.status_code == 200, r.text
        assert r.json() == experiment.predict_run(folder, PAIR, {}, "cpu")[1]


def one_line(result, *needles: str) -> None:
    assert result.code == 2, (result.out, result.err)
    line = result.err.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line, result.err
    for needle in needles:
        assert needle in line, line


def test_mismatched_members_and_bad_options_are_refused(runs, run_cli, tmp_path):
    out = tmp_path / "ens"
    one_line(run_cli("ensemble", runs["sim0"], runs["kp0"], "--out", out), "a keyphrase run",
             "similarity")
    one_line(run_cli("ensemble", runs["kp0"], runs["kpbio"], "--out", out), "kpbio", "tags differ")
    one_line(run_cli("ensemble", runs["sim0"], "--out", out), "at least two runs")
    one_line(run_cli("ensemble", runs["sim0"], runs["sim0"], "--out", out), "given twice")
    one_line(run_cli("ensemble", runs["sim0"], runs["sim1"], "--out", out, "--weights", "1"),
             "--weights", "1 weights for 2 runs")
    one_line(run_cli("ensemble", runs["sim0"], runs["sim1"], "--out", out, "--weights", "1,-1"),
             "> 0")
    one_line(run_cli("ensemble", runs["sim0"], runs["sim1"], "--out", out, "--rule", "vote"),
             "--rule vote", "mean-scores")
    assert not out.exists()  # nothing half-written
    assert run_cli("ensemble", runs["sim0"], runs["sim1"], "--out", out).code == 0
    one_line(run_cli("ensemble", out, runs["sim0"], "--out", tmp_path / "e2"), "an ensemble, not a run")


def test_a_member_changed_after_the_ensemble_is_refused(runs, run_cli, tmp_path):
    members = tmp_path / "members"
    for r in ("sim0", "sim1"):  # copies: the module's runs stay as they are
        (members / r).mkdir(parents=True)
        for f in runs[r].iterdir():
            if f.is_file():
                (members / r / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "ens"
    assert run_cli("ensemble", members / "sim0", members / "sim1", "--out", out).code == 0
    assert run_cli("evaluate", out).code == 0
    weights = members / "sim1" / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    for args in (("evaluate", out), ("predict", out, *PAIR), ("export", out, "--out", tmp_path / "e.onnx")):
        one_line(run_cli(*args), "sim1", "changed after the ensemble", "best.safetensors")


def test_an_ensemble_file_trains_its_missing_members_then_combines(run_cli, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "lstm.toml").write_text('[model]\nname = "lstm"\n')
    (recipes / "rnn.toml").write_text('[model]\nname = "rnn"\n')
    file = recipes / "ensemble.toml"
    file.write_text('task = "similarity"\n'
                    '[[members]]\nrecipe = "lstm.toml"\nseeds = [0, 1]\n'
                    'set = ["data.limit=300", "train.epochs=1"]\n'
                    '[[members]]\nrecipe = "rnn.toml"\nweight = 2.0\n'
                    'set = ["data.limit=300", "train.epochs=1"]\n')
    out = tmp_path / "ens"
    made = as_json(run_cli("ensemble", "--config", file, "--data", "generated", "--out", out, "--json"))
    assert sorted(p.name for p in (out / "members").iterdir()) == ["lstm-seed0", "lstm-seed1", "rnn-seed0"]
    assert [m["weight"] for m in made["members"]] == pytest.approx([0.25, 0.25, 0.5])
    assert as_json(run_cli("evaluate", out, "--json"))["pearson"] == pytest.approx(made["pearson"])
    stamp = (out / "members" / "rnn-seed0" / "best.safetensors").stat().st_mtime_ns
    again = as_json(run_cli("ensemble", "--config", file, "--data", "generated", "--out", out, "--json"))
    assert again["pearson"] == pytest.approx(made["pearson"])  # members kept, not trained again
    assert (out / "members" / "rnn-seed0" / "best.safetensors").stat().st_mtime_ns == stamp
    file.write_text('task = "similarity"\nvote = "majority"\n[[members]]\nrecipe = "lstm.toml"\n')
    one_line(run_cli("ensemble", "--config", file, "--data", "generated", "--out", tmp_path / "e2"),
             "ensemble.toml", "'vote'")
    file.write_text('task = "similarity"\n[[members]]\nrecipe = "gone.toml"\nseeds = [0, 1]\n')
    one_line(run_cli("ensemble", "--config", file, "--out", tmp_path / "e2"), "gone.toml")
    one_line(run_cli("ensemble", "--config", file, "--out", tmp_path / "e2", "--rule", "mean-scores"),
             "--config", "--rule")


@pytest.mark.parametrize("task", ["keyphrase", "similarity"])
def test_the_shipped_ensemble_files_read(task):
    from nnlab import ensemble_config

    file = Path(__file__).parents[1] / "experiments" / task / "ensemble.toml"
    found, rule, _select, members = ensemble_config.read(file)
    assert found == task and sum(len(m.seeds) for m in members) >= 3
    assert rule is None or rule in {"keyphrase": ("mean-emissions", "mean-marginals"),
                                    "similarity": ("mean-scores",)}[task]


def test_crf_marginals_are_probabilities_and_a_softmax_without_transitions():
    from nnlab.tasks.keyphrase_ensemble import TaggerOutputs, marginals

    gen = torch.Generator().manual_seed(0)
    emissions = [torch.randn(6, 4, generator=gen), torch.randn(1, 4, generator=gen)]
    with torch.inference_mode():  # as under a server's or eval_mode's inference mode
        found = marginals(TaggerOutputs(emissions, torch.randn(4, generator=gen),
                                        torch.randn(4, 4, generator=gen), torch.randn(4, generator=gen)))
    assert all(torch.allclose(m.sum(1), torch.ones(len(m)), atol=1e-5) for m in found)
    flat = marginals(TaggerOutputs(emissions, torch.zeros(4), torch.zeros(4, 4), torch.zeros(4)))
    assert all(torch.allclose(m, e.softmax(1), atol=1e-6) for m, e in zip(flat, emissions, strict=True))
    # a one-token sequence: its marginal is the softmax of start + emission + end
    start, trans, end = (torch.randn(*shape, generator=gen) for shape in ((4,), (4, 4), (4,)))
    one = marginals(TaggerOutputs([emissions[1]], start, trans, end))[0]
    assert torch.allclose(one[0], (start + emissions[1][0] + end).softmax(0), atol=1e-6)
