"""Data-parallel training under torchrun (gloo, 2 CPU processes): the same steps as one
process with the same global batch, resume after a kill, one run folder written.

Each test starts real processes (a few seconds each); skipped where torchrun cannot start
them (no loopback sockets, no `torchrun` in the environment, no /proc to find them by)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_cifar_python

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
pytestmark = [pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed"),
              pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="no /proc")]
# SGD without momentum tricks and no dropout: two ranks' averaged gradients equal the
# global batch's up to rounding. In float64: in fp32 the ranks' half-batch sums round
# differently from the whole batch's (about 1e-7), and an epoch of SGD amplifies that by a
# host-dependent amount (a tanh RNN at lr 0.1 crossed 1e-4 on an Intel Xeon with AMX, not on
# an AMD EPYC); float64's rounding (about 1e-16) keeps the difference far below any real bug.
FP64 = ["--set", "train.precision='fp64'"]
# odd global batches: the ranks' shares differ (17/16), so the loss weighting is exercised
COMMON = ["--set", "data.batch_size=33", "--set", "optim.name='sgd'", "--set", "optim.lr=0.05",
          "--set", "train.threads=1", "--quiet", *FP64]
# what float64 runs may differ by (seen: 7e-16): a bug in the loss weighting moves weights by 1e-3
SAME = {"rtol": 1e-7, "atol": 1e-10}


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, NNLAB_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env.pop("NNLAB_DATA", None)
    return env


FOURTH = str(Path(__file__).with_name("with_fourth_task.py"))  # nnlab with the fourth task


def _train(args: list[str], tmp_path: Path, procs: int = 1, script: str | None = None, **kw
           ) -> subprocess.CompletedProcess:
    """`nnlab train ARGS` in 1 process or under torchrun; `script`: a program in nnlab's place."""
    main = [script] if script else ["-m", "nnlab"]
    if procs == 1:
        cmd = [sys.executable, *main, "train", *args]
    else:
        cmd = [TORCHRUN, "--standalone", f"--nproc_per_node={procs}", *main, "train", *args]
    return subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=240, **kw)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float,
                        atol: float) -> None:
    """Every tensor of `b` equals `a`'s within tolerance; a failure names the tensor and its
    greatest absolute and relative differences (so a near miss on another host is readable)."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key].double(), b[key].double()
        diff = (x - y).abs()
        worst = float(diff.max()) if diff.numel() else 0.0
        worst_rel = float((diff / x.abs().clamp(min=atol)).max()) if diff.numel() else 0.0
        ok = bool((diff <= atol + rtol * x.abs()).all())
        assert ok, (f"{key}: greatest absolute difference {worst:.3g}, relative {worst_rel:.3g} "
                    f"(rtol {rtol:g}, atol {atol:g}, dtype {a[key].dtype})")


def _kill_all(marker: str) -> None:
    """SIGKILL every process whose command line mentions `marker` (here: the run folder)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


def _spawnable(result: subprocess.CompletedProcess) -> None:
    if result.returncode and ("Address family not supported" in result.stderr
                              or ("Permission denied" in result.stderr and "socket" in result.stderr)):
        pytest.skip("processes cannot open loopback sockets here")


def _one_and_two_processes(args: list[str], tmp_path: Path, run_cli, script: str | None = None
                           ) -> tuple[dict, dict]:
    """Train `args` into tmp/one (one process: this one, which saves a Python start) and
    tmp/two (2 ranks under torchrun); both runs' last weights."""
    threads = torch.get_num_threads()
    try:
        single = run_cli("train", *args, "--out", tmp_path / "one")
    finally:
        torch.set_num_threads(threads)  # the run's train.threads=1 must not slow later tests
    assert single.code == 0, single.err
    double = _train([*args, "--out", str(tmp_path / "two")], tmp_path, procs=2, script=script)
    _spawnable(double)
    assert double.returncode == 0, double.stderr
    return _weights(tmp_path / "one"), _weights(tmp_path / "two")


@pytest.fixture
def cifar(tmp_path) -> Path:
    # 2 x 100 images: 180 train / 20 validation; batches of 33 (the last has 15: 8 + 7)
    return write_cifar_python(tmp_path / "data", per_batch=100, batches=2)


def test_two_processes_take_the_steps_of_one(tmp_path, cifar, run_cli):
    base = ["image", "--model", "cnn", "--data", str(cifar), "--epochs", "2", *COMMON]
    a, b = _one_and_two_processes(base, tmp_path, run_cli)
    assert all(v.dtype == torch.float64 for v in a.values() if v.is_floating_point())  # really fp64
    assert_same_weights(a, b, **SAME)
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(two) == 2 and abs(one[-1]["train_loss"] - two[-1]["train_loss"]) < 1e-4
    assert one[-1]["val_accuracy"] == two[-1]["val_accuracy"]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["world_size"] == 2
    # rank 0 alone wrote: one folder, one summary, no stray files from rank 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "one", "two"]
    assert (tmp_path / "two" / "summary.json").is_file()


@pytest.mark.parametrize("task,model,sets", [("keyphrase", "bilstm-crf", ["model.dropout=0"]),
                                             ("similarity", "rnn", [])])
def test_text_tasks_train_under_two_processes(tmp_path, task, model, sets, run_cli):
    """Variable-length batches: each rank's loss (mean per sentence or pair) is weighted by
    its share of the global batch, so the average gradient is the one-process gradient
    (batches of 33 split 17 + 16: without the weighting, weights differ by about 1e-3)."""
    args = [task, "--model", model, "--data", "generated", "--epochs", "1",
            "--set", "data.batch_size=33", "--set", "train.threads=1", "--quiet", *FP64,
            *[x for s in sets for x in ("--set", s)]]  # no dropout: ranks draw their own masks
    a, b = _one_and_two_processes(args, tmp_path, run_cli)
    assert_same_weights(a, b, **SAME)
    # validation split between the ranks, predictions gathered: the whole split's figures
    metric = "val_span_f1" if task == "keyphrase" else "val_pearson"
    one, two = (json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[-1])
                for r in ("one", "two"))
    assert one[metric] > 0.1 and abs(one[metric] - two[metric]) < 1e-3
    assert abs(one["val_loss"] - two["val_loss"]) < 1e-3


def test_the_fourth_task_takes_the_steps_of_one_with_no_distributed_code(tmp_path, run_cli):
    """The task module has no line of distributed code: the training loop shards its global
    batches of indices and weights each rank's loss (batches of 33 split 17 + 16)."""
    from test_task_registry import write_sentences

    source = Path(__file__).with_name("sentence_class.py").read_text()
    assert "distributed" not in source and "shard" not in source
    data = tmp_path / "sentences"
    data.mkdir()
    for split, n, seed in (("train", 200, 0), ("val", 40, 1)):
        write_sentences(data / f"{split}.tsv", n, seed)
    args = ["sentence-class", "--model", "sentence-lstm", "--data", str(data), "--epochs", "2",
            "--set", "data.batch_size=33", "--set", "train.threads=1", "--quiet", *FP64]
    a, b = _one_and_two_processes(args, tmp_path, run_cli, script=FOURTH)
    assert_same_weights(a, b, **SAME)


def test_killed_ddp_run_resumes_to_the_same_weights(tmp_path, cifar):
    base = ["image", "--model", "cnn", "--data", str(cifar), "--epochs", "4", *COMMON]
    whole = _train([*base, "--out", str(tmp_path / "whole")], tmp_path, procs=2)
    _spawnable(whole)
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "nnlab", "train", *base,
           "--out", str(killed)]
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "last.pt").is_file():
        time.sleep(0.05)
    _kill_all(str(killed))  # the launcher and both ranks (torchrun starts them in their own sessions)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "nnlab", "train",
                              "--resume", str(killed)], env=_env(tmp_path), capture_output=True,
                             text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "whole"), _weights(killed)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_ranks_that_disagree_stop_with_one_line(tmp_path, cifar):
    # rank 1 reads other data: same format, other bytes
    other = write_cifar_python(tmp_path / "other", per_batch=100, batches=2, classes=10)
    shutil.copy(cifar / "batches.meta", other / "batches.meta")
    (other / "data_batch_1").write_bytes((cifar / "data_batch_2").read_bytes())
    script = ("import os, sys; from nnlab.cli import main; "
              f"sys.argv[1 + sys.argv.index('--data')] = {str(other)!r} if os.environ['RANK'] == '1' "
              "else sys.argv[1 + sys.argv.index('--data')]; main()")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(script)
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", str(wrapper), "train", "image",
           "--model", "cnn", "--data", str(cifar), "--epochs", "1", *COMMON,
           "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    _spawnable(r)
    assert r.returncode != 0
    assert "error: ranks disagree on the data" in r.stderr
    assert not (tmp_path / "run").exists()


def test_reproduce_under_two_processes_writes_one_study(tmp_path):
    from test_studies import write_study

    study = write_study(tmp_path, """
task = "keyphrase"
[budgets]
quick = ["train.epochs=1", "data.batch_size=64", "train.threads=1"]
[[variants]]
name = "bilstm-crf"
config = "keyphrase/bilstm-crf.toml"
""")
    out = tmp_path / "study"
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "nnlab", "reproduce", str(study),
           "--data", "generated", "--out", str(out), "--quiet"]
    r = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    _spawnable(r)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("report: ") == 1  # rank 0 alone reports
    assert sorted(p.name for p in out.iterdir()) == [  # .lock: rank 0 held the study folder
        ".lock", "curves_all.png", "report.html", "report.md", "runs", "study.json"]
    assert [p.name for p in (out / "runs").iterdir()] == ["bilstm-crf"]
    assert json.loads((out / "runs" / "bilstm-crf" / "config.json").read_text())["world_size"] == 2
