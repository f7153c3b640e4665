"""Ensemble selection (`nnlab ensemble RUN ... --select STEPS`): forward selection with
replacement against hand-worked cases, never below its best run on the data it chose on, the
held-out estimate on halves of validation, and the CLI's record and refusals."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ensemble import as_json, one_line

from nnlab import ensemble_select
from nnlab.metrics import correlations


def pearson_of(preds: torch.Tensor, gold: torch.Tensor):
    """score(counts): Pearson r of the count-weighted mean of the rows of `preds` (K, N)."""
    def score(counts: list[int]) -> float:
        w = torch.tensor(counts, dtype=torch.float64)
        return correlations((w / w.sum()) @ preds, gold)["pearson"]
    return score


def test_greedy_adds_with_replacement_and_keeps_the_best_prefix():
    # hand-worked: gold = 2a + b over four examples, two candidates a and b; the best weighted
    # mean is 2:1, reached in three steps (a, then b, then a again); a fourth step only loses
    a = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    preds, gold = torch.stack([a, b]), 2 * a + b
    found = ensemble_select.greedy(2, pearson_of(preds, gold), steps=6, higher_is_better=True)
    assert found.counts == [2, 1] and found.picks == [0, 1, 0]
    assert found.curve[-1] == pytest.approx(1.0) and len(found.curve) == 3
    assert found.chosen == [0, 1]
    assert ensemble_select.weights_of(found.counts) == pytest.approx([2 / 3, 1 / 3])
    # lower is better: the same search on the negated figure
    flipped = ensemble_select.greedy(2, lambda c: -pearson_of(preds, gold)(c), 6, higher_is_better=False)
    assert flipped.counts == [2, 1]
    # one step: the best run alone
    assert ensemble_select.greedy(2, pearson_of(preds, gold), 1, True).counts == [1, 0]
    # a constant run's correlation is undefined (nan): worst of all, never the start
    constant = torch.stack([torch.full((4,), 2.0, dtype=torch.float64), b])
    with_nan = ensemble_select.greedy(2, pearson_of(constant, gold), 3, True)
    assert with_nan.picks[0] == 1 and with_nan.curve[0] == pytest.approx(pearson_of(preds, gold)([0, 1]))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(1, 12), st.integers(0, 10_000))
def test_greedy_is_never_below_its_best_run_where_it_chose(candidates, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    gold = torch.randn(30, generator=gen, dtype=torch.float64)
    preds = gold + torch.randn(candidates, 30, generator=gen, dtype=torch.float64) * torch.rand(
        candidates, 1, generator=gen, dtype=torch.float64) * 3
    score = pearson_of(preds, gold)
    found = ensemble_select.greedy(candidates, score, steps, True)
    best_single = max(score([int(j == i) for j in range(candidates)]) for i in range(candidates))
    assert score(found.counts) == pytest.approx(max(found.curve)) and found.curve[-1] == max(found.curve)
    assert score(found.counts) >= best_single - 1e-12
    assert sum(found.counts) == len(found.curve) <= steps


def test_too_few_validation_examples_to_halve_are_refused():
    from nnlab.errors import NnlabError

    with pytest.raises(NnlabError, match=r"holds 9 validation examples.*10 or more"):
        ensemble_select.check_examples(9, "data/tiny")
    ensemble_select.check_examples(10, "data/small")


def test_crossfit_judges_each_half_by_what_the_other_half_chose():
    a, b = ensemble_select.halves(10)
    assert sorted(a + b) == list(range(10)) and len(a) == 5 and not set(a) & set(b)
    assert ensemble_select.halves(10) == (a, b)  # a fixed shuffle
    # two candidates; half a prefers run 0, half b run 1; a figure says which half judged it
    prefers = {tuple(a): 0, tuple(b): 1}

    def judge_part(indices: list[int], counts: list[int]) -> float:
        favourite = prefers[tuple(indices)]
        return counts[favourite] / sum(counts) + (10 if favourite == 0 else 20)

    def select_on(indices: list[int]) -> ensemble_select.Selection:
        return ensemble_select.greedy(2, lambda c: judge_part(indices, c), 3, True)

    held = ensemble_select.crossfit(10, judge_part, 2, select_on, True)
    # chosen on a: run 0 alone, judged on b: 20; chosen on b: run 1 alone, judged on a: 10
    assert held["selected"] == pytest.approx(15.0) and held["best_run"] == pytest.approx(15.0)
    assert held["all_equal"] == pytest.approx(15.5) and held["halves"] == [5, 5]


def test_select_chooses_members_and_weights_through_the_cli(runs, run_cli, tmp_path):
    out = tmp_path / "chosen"
    made = as_json(run_cli("ensemble", runs["sim0"], runs["sim1"], runs["simrnn"], "--out", out,
                           "--select", "6", "--json"))
    chosen = made["selection"]
    assert len(chosen["candidates"]) == 3 and chosen["steps"] == 6
    # the ensemble written is the best one seen, weighted by how often each run was added
    assert made["pearson"] == pytest.approx(max(chosen["curve"]), abs=1e-9)
    counts = chosen["counts"]
    assert [m["weight"] for m in made["members"]] == pytest.approx(
        [c / sum(counts) for c in counts if c])
    assert made["pearson"] >= max(c["pearson"] for c in chosen["candidates"]) - 1e-9
    assert set(chosen["crossfit"]) == {"selected", "all_equal", "best_run", "halves"}
    saved = json.loads((out / "ensemble.json").read_text())
    assert len(saved["members"]) == chosen["chosen"] == sum(1 for c in counts if c)
    again = as_json(run_cli("evaluate", out, "--json"))
    assert again["pearson"] == pytest.approx(made["pearson"], abs=1e-6)
    text = run_cli("ensemble", runs["sim0"], runs["sim1"], "--out", tmp_path / "c2", "--select", "3")
    assert text.code == 0 and "judged on the other" in text.out


@pytest.mark.parametrize(("members", "metric"), [(("kp0", "kp1", "kpsoft"), "span_f1"),
                                                 (("img0", "img1"), "accuracy")])
def test_select_on_taggers_and_images(runs, run_cli, tmp_path, members, metric):
    out = tmp_path / "ens"
    made = as_json(run_cli("ensemble", *(runs[m] for m in members), "--out", out, "--select", "4",
                           "--json"))
    assert made[metric] == pytest.approx(max(made["selection"]["curve"]), abs=1e-9)
    assert 0.0 <= made["selection"]["crossfit"]["selected"] <= 1.0
    assert as_json(run_cli("evaluate", out, "--json"))[metric] == pytest.approx(made[metric], abs=1e-6)


def test_an_ensemble_of_one_chosen_run_evaluates_as_that_run(runs, run_cli, tmp_path):
    out = tmp_path / "ens"
    assert run_cli("ensemble", runs["sim0"], runs["sim1"], "--out", out).code == 0
    file = out / "ensemble.json"
    saved = json.loads(file.read_text())
    saved["members"] = saved["members"][:1]  # what a selection that kept one run writes
    file.write_text(json.dumps(saved))
    alone = as_json(run_cli("evaluate", runs["sim0"], "--json"))
    assert as_json(run_cli("evaluate", out, "--json"))["pearson"] == pytest.approx(alone["pearson"], abs=1e-6)


def test_select_refusals(runs, run_cli, tmp_path):
    out = tmp_path / "ens"
    pair = (runs["sim0"], runs["sim1"])
    one_line(run_cli("ensemble", *pair, "--out", out, "--select", "3", "--weights", "1,2"),
             "--select", "--weights")
    one_line(run_cli("ensemble", *pair, "--out", out, "--select", "500"), "--select 500", "1 to 200")
    one_line(run_cli("ensemble", *pair, "--out", out, "--select", "-1"), "--select -1")
    assert not out.exists()
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "lstm.toml").write_text('task = "similarity"\n[model]\nname = "lstm"\n')
    file = recipes / "ensemble.toml"
    file.write_text('task = "similarity"\nselect = 4\n[[members]]\nrecipe = "lstm.toml"\n'
                    'seeds = [0, 1]\nweight = 2.0\n')
    one_line(run_cli("ensemble", "--config", file, "--out", out), "members #1", "no weight")
    file.write_text('task = "similarity"\nselect = "yes"\n[[members]]\nrecipe = "lstm.toml"\n')
    one_line(run_cli("ensemble", "--config", file, "--out", out), "`select`")


def test_an_ensemble_file_selects_over_named_members(run_cli, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "lstm.toml").write_text('task = "similarity"\n[model]\nname = "lstm"\n'
                                       '[data]\nlimit = 300\n[train]\nepochs = 2\n')
    file = recipes / "ensemble.toml"
    file.write_text('task = "similarity"\nselect = 3\n'
                    '[[members]]\nrecipe = "lstm.toml"\nseeds = [0]\n'
                    '[[members]]\nrecipe = "lstm.toml"\nseeds = [0]\nname = "lstm-wide"\n'
                    'set = ["model.hidden_sizes=[96]"]\n')
    out = tmp_path / "ens"
    made = as_json(run_cli("ensemble", "--config", file, "--data", "generated", "--out", out, "--json"))
    assert (out / "members" / "lstm-seed0" / "best.safetensors").is_file()
    assert (out / "members" / "lstm-wide-seed0" / "best.safetensors").is_file()
    assert len(made["selection"]["candidates"]) == 2
    file.write_text('task = "similarity"\n[[members]]\nrecipe = "lstm.toml"\nseeds = [0, 1]\n'
                    'name = "../elsewhere"\n')
    one_line(run_cli("ensemble", "--config", file, "--out", tmp_path / "e2"), "members #1", "name")
    file.write_text('task = "similarity"\n[[members]]\nrecipe = "lstm.toml"\nseeds = [0]\n'
                    '[[members]]\nrecipe = "lstm.toml"\nseeds = [0]\n')
    one_line(run_cli("ensemble", "--config", file, "--data", "generated", "--out", tmp_path / "e3"),
             "two members would train into", "`name`")
