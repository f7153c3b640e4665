"""Many processes and machines: a study on Ray workers gives the serial path's runs, lands on
every node of a cluster, survives a worker killed with -9; `nnlab tune` searches a space with
Optuna (TPE, pruning), resumes, and writes a best.toml that reruns the best trial."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from nnlab import studies
from nnlab.config import RunConfig
from nnlab.errors import NnlabError
from nnlab.executor import Resources
from nnlab.experiment import resolve_config

REPO = Path(__file__).resolve().parents[1]
TINY_STUDY = """
title = "tiny"
task = "similarity"
[budgets]
quick = ["train.epochs={epochs}", "data.limit=200"]
[[variants]]
name = "rnn"
config = "similarity/siamese-rnn.toml"
[[variants]]
name = "lstm"
config = "similarity/siamese-lstm.toml"
"""
QUIET = Console(quiet=True)


def tiny_study(tmp_path: Path, epochs: int = 2) -> studies.Study:
    root = tmp_path / "exp"
    (root / "studies").mkdir(parents=True)
    (root / "similarity").symlink_to(REPO / "experiments" / "similarity")
    (root / "studies" / "tiny.toml").write_text(TINY_STUDY.format(epochs=epochs))
    return studies.load_study(str(root / "studies" / "tiny.toml"))


def val(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["val"]["pearson"]


# -- the search space --------------------------------------------------------------------------
@pytest.mark.parametrize("spec,words", [
    ("optim.nosuch=uniform(0,1)", "optim.nosuch"),
    ("optim.lr=gaussian(0,1)", "unknown distribution"),
    ("optim.lr=uniform(0.1,0.01)", "low < high"),
    ("optim.lr=loguniform(0,0.1)", "low > 0"),
    ("optim.lr=uniform(a,b)", "numbers"),
    ("optim.momentum=uniform(0,2)", "optim.momentum"),
    ("optim.name=choice(adam,foo)", "'foo'"),
    ("train.epochs=choice(a,b)", "train.epochs"),
    ("train.epochs=int(1.5,3)", "whole-number"),
    ("model.nosuch=uniform(0,1)", "nosuch"),
    ("optim.lr", "KEY=DIST"),
    ("optim.lr=choice(0.1)", "two values"),
])
def test_a_bad_space_is_one_line_before_anything_trains(run_cli, tmp_path, spec, words):
    pytest.importorskip("optuna")
    r = run_cli("tune", "similarity", "--model", "lstm", "--data", "generated", "--space", spec,
                "--trials", "2", "--out", tmp_path / "search")
    assert r.code == 2 and words in r.err and "Traceback" not in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "search").exists()


# -- tune, in this process -----------------------------------------------------------------------
def test_tune_runs_resumes_and_writes_a_best_toml_that_reruns(run_cli, tmp_path):
    pytest.importorskip("optuna")
    search = tmp_path / "search"
    args = ["tune", "similarity", "--model", "lstm", "--data", "generated", "--epochs", "3",
            "--set", "data.limit=200", "--space", "optim.lr=loguniform(1e-3,3e-2)",
            "--space", "model.dropout=uniform(0,0.5)", "--space", "optim.name=choice(adam,rmsprop)",
            "--seed", "3", "--out", search, "--quiet"]
    r = run_cli(*args, "--trials", "5")
    assert r.code == 0, r.err
    trials = sorted((search / "trials").iterdir())
    assert len(trials) == 5 and all((t / "config.json").is_file() for t in trials)
    md = (search / "report.md").read_text()
    assert "## Trials" in md and "## Search history" in md and "model.dropout" in md
    assert (search / "search_history.png").is_file()
    # the best trial: the best validation value among unpruned trials, and best.toml reruns it
    summaries = {t.name: json.loads((t / "summary.json").read_text()) for t in trials}
    finished = {n: s["val"]["pearson"] for n, s in summaries.items() if not s["pruned"]}
    best_name = max(finished, key=finished.get)
    rerun = tmp_path / "rerun"
    r = run_cli("train", "--config", search / "best.toml", "--out", rerun, "--quiet")
    assert r.code == 0, r.err
    assert val(rerun) == pytest.approx(finished[best_name], abs=1e-6)
    # a rerun with more trials keeps the five and adds one
    mtimes = {t.name: (t / "summary.json").stat().st_mtime_ns for t in trials}
    r = run_cli(*args, "--trials", "6")
    assert r.code == 0, r.err
    now = sorted((search / "trials").iterdir())
    assert len(now) == 6 and all((t / "summary.json").stat().st_mtime_ns == mtimes[t.name] for t in trials)
    # another space in the same folder is refused
    r = run_cli(*args, "--space", "train.label_smoothing=uniform(0,0.1)", "--trials", "6")
    assert r.code == 2 and "another search" in r.err


def test_pruning_stops_weak_trials(tmp_path):
    pytest.importorskip("optuna")
    from nnlab.tune import make_search, run_search

    cfg = resolve_config("similarity", "lstm", data="generated", epochs=4, sets=["data.limit=200"])
    from nnlab import tasks

    cfg.data.path = tasks.require_data(tasks.get("similarity"), cfg.data.path)
    # a space where half the trials cannot learn (a tiny lr): the median pruner stops them
    search = make_search(cfg, ["optim.lr=choice(1e-7,0.01)"], trials=8, seed=0, pruner="median",
                         storage=None)
    run_search(search, tmp_path / "s", Resources(), QUIET, progress=False)
    summaries = [json.loads((t / "summary.json").read_text()) for t in (tmp_path / "s" / "trials").iterdir()]
    pruned = [s for s in summaries if s["pruned"]]
    assert pruned and all(s["epochs_run"] < 4 for s in pruned)
    assert all(json.loads((t / "config.json").read_text())["config"]["optim"]["lr"] == 1e-7
               for t in (tmp_path / "s" / "trials").iterdir()
               if json.loads((t / "summary.json").read_text())["pruned"])


# -- Ray -----------------------------------------------------------------------------------------
def test_workers_without_the_extra_is_one_line(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    r = run_cli("reproduce", "similarity", "--workers", "2", "--out", tmp_path / "s")
    assert r.code == 2 and "pip install 'nnlab[ray]'" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on this machine, one CPU each (two `ray start`s)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": 80 << 20})
    c.add_node(num_cpus=1, object_store_memory=80 << 20)
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield c
    ray.shutdown()
    c.shutdown()


def test_a_study_on_a_two_node_cluster_equals_the_serial_study(cluster, tmp_path):
    study = tiny_study(tmp_path)
    serial = studies.run_study(study, "quick", "generated", tmp_path / "serial", QUIET, progress=False)
    spread = studies.run_study(study, "quick", "generated", tmp_path / "ray", QUIET, progress=False,
                               resources=Resources(workers=2, threads=1, address=cluster.address))
    nodes = set()
    from safetensors.torch import load_file

    for folder in ("rnn", "lstm"):
        assert val(tmp_path / "ray" / "runs" / folder) == val(tmp_path / "serial" / "runs" / folder)
        mine, theirs = (load_file(str(tmp_path / d / "runs" / folder / "best.safetensors"))
                        for d in ("ray", "serial"))
        assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)  # same weights
        nodes.add(json.loads((tmp_path / "ray" / "runs" / folder / "summary.json").read_text())["node"])
        assert (tmp_path / "ray" / "runs" / folder / "variant.json").is_file()
    assert len(nodes) == 2  # one job on each node: each asks for the one CPU a node has
    assert spread.name == serial.name == "report.html"

    def table(folder: str) -> list[list[str]]:  # the main table's variant, model and metric columns
        lines = (tmp_path / folder / "report.md").read_text().splitlines()
        return [line.split("|")[1:5] for line in lines if line.startswith(("| rnn", "| lstm"))]

    assert table("ray") == table("serial") and len(table("ray")) == 2  # the same report


def _lock_holder(run: Path) -> int | None:
    """The pid of the process whose open files include the run folder's lock."""
    lock = str((run / ".lock").resolve())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                    return int(pid)
        except OSError:
            continue
    return None


def test_a_worker_killed_with_sigkill_is_retried_and_resumes(cluster, tmp_path):
    study = tiny_study(tmp_path, epochs=6)
    out = tmp_path / "s"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            studies.run_study(study, "quick", "generated", out, QUIET, progress=False,
                              resources=Resources(workers=2, threads=1, address=cluster.address))
        except BaseException as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    victim = out / "runs" / "lstm"
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and killed is None:
        metrics = victim / "metrics.jsonl"
        ready = metrics.is_file() and len(metrics.read_text().splitlines()) >= 2
        if ready and not (victim / "summary.json").exists():
            killed = _lock_holder(victim)
            if killed:
                os.kill(killed, 9)
        time.sleep(0.05)
    thread.join(timeout=300)
    assert not errors, errors
    assert killed is not None, "never caught the job between epochs 2 and 6"
    epochs = [json.loads(line)["epoch"] for line in (victim / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 7))  # resumed from last.pt: no epoch logged twice
    assert json.loads((victim / "summary.json").read_text())["epochs_run"] == 6


def test_tune_on_ray_workers(cluster, tmp_path):
    pytest.importorskip("optuna")
    from nnlab import tasks
    from nnlab.tune import make_search, run_search

    cfg: RunConfig = resolve_config("similarity", "lstm", data="generated", epochs=3, sets=["data.limit=200"])
    cfg.data.path = tasks.require_data(tasks.get("similarity"), cfg.data.path)
    search = make_search(cfg, ["optim.lr=choice(1e-7,0.01)"], trials=6, seed=0, pruner="median", storage=None)
    run_search(search, tmp_path / "s", Resources(workers=2, threads=1, address=cluster.address), QUIET,
               progress=False)
    trials = (tmp_path / "s" / "trials").iterdir()
    summaries = [json.loads((t / "summary.json").read_text()) for t in trials]
    assert len(summaries) == 6 and len({s["node"] for s in summaries}) == 2
    assert (tmp_path / "s" / "best.toml").is_file()


def test_resources_are_checked():
    for bad in (Resources(workers=0), Resources(threads=-1), Resources(gpus=float("nan"))):
        with pytest.raises(NnlabError):
            bad.check()


def test_a_trial_left_running_by_a_killed_driver_is_run_again(tmp_path):
    """A driver killed mid-search leaves its trials RUNNING in the Optuna storage: the rerun
    picks them up (their run folders resume or start) instead of leaving them dangling."""
    optuna = pytest.importorskip("optuna")
    from nnlab import tasks
    from nnlab.tune import STUDY_NAME, make_search, run_search

    cfg = resolve_config("similarity", "lstm", data="generated", epochs=1, sets=["data.limit=100"])
    cfg.data.path = tasks.require_data(tasks.get("similarity"), cfg.data.path)
    search = make_search(cfg, ["optim.lr=loguniform(1e-3,1e-2)"], trials=2, seed=0, pruner="none",
                         storage=None)
    out = tmp_path / "s"
    out.mkdir()
    from nnlab.tune import _claim

    _claim(out, search)
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'tune.db'}",
                                direction="maximize")
    left = study.ask({"optim.lr": search.params[0].distribution()})  # the killed driver's trial
    run_search(search, out, Resources(), QUIET, progress=False)
    states = {t.number: t.state.name for t in optuna.load_study(
        study_name=STUDY_NAME, storage=f"sqlite:///{out / 'tune.db'}").trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE"} and left.number == 0
    assert (out / "trials" / "trial-0000" / "summary.json").is_file()


def test_a_shared_storage_retries_a_dead_drivers_trial_and_leaves_a_live_ones(tmp_path):
    """Two drivers share one --storage: a trial whose driver stopped beating its heartbeat is
    failed and its settings run again here; a trial whose driver still beats is left alone."""

    optuna = pytest.importorskip("optuna")
    from optuna.storages import RDBStorage

    from nnlab import tasks
    from nnlab.tune import STUDY_NAME, make_search, run_search

    cfg = resolve_config("similarity", "lstm", data="generated", epochs=1, sets=["data.limit=100"])
    cfg.data.path = tasks.require_data(tasks.get("similarity"), cfg.data.path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    search = make_search(cfg, ["optim.lr=loguniform(1e-3,1e-2)"], trials=3, seed=0, pruner="none",
                         storage=url, heartbeat=1)
    space = {"optim.lr": search.params[0].distribution()}
    storage = RDBStorage(url, heartbeat_interval=1)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize")
    dead, live = study.ask(space), study.ask(space)  # two other drivers' trials
    storage.record_heartbeat(dead._trial_id)  # its last beat, then the driver died
    stop = threading.Event()

    def beat() -> None:  # the live driver
        while not stop.is_set():
            storage.record_heartbeat(live._trial_id)
            stop.wait(0.3)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        time.sleep(4.5)  # past the grace period (3 beats; SQLite's clock counts whole seconds)
        run_search(search, tmp_path / "here", Resources(), QUIET, progress=False)
    finally:
        stop.set()
        beating.join()
    trials = optuna.load_study(study_name=STUDY_NAME, storage=url).trials
    states = {t.number: t.state.name for t in trials}
    assert states[dead.number] == "FAIL" and states[live.number] == "RUNNING"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == dead.params  # the dead trial's settings, trained again here
    # 3 trials begun in all: the live one, the retry, one new
    assert sorted(states.values()) == ["COMPLETE", "COMPLETE", "FAIL", "RUNNING"]
    assert len(list((tmp_path / "here" / "trials").iterdir())) == 2


def test_a_storage_without_its_driver_is_one_line(tmp_path, run_cli):
    pytest.importorskip("optuna")
    pytest.importorskip("sqlalchemy")
    import importlib.util

    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("the MySQL driver is installed here")
    r = run_cli("tune", "similarity", "--model", "lstm", "--data", "generated", "--space",
                "optim.lr=loguniform(1e-3,1e-2)", "--trials", "1", "--storage",
                "mysql://user:secret@127.0.0.1:9/none", "--out", tmp_path / "s", "--quiet")
    assert r.code == 2 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert "no Python driver for this database" in r.err
