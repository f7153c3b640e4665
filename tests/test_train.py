"""Training end to end on tiny data: run folder contents, evaluate, predict, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import write_cifar_python, write_image_folder
from nnlab.config import ScheduleConfig
from nnlab.optim import lr_multiplier

TINY = ["--set", "data.limit=400", "--set", "data.val_size=200", "--quiet"]


def test_train_writes_a_complete_run_folder(tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "cnn", "--data", "generated", "--epochs", "2",
                "--out", out, *TINY)
    assert r.code == 0, r.err
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.safetensors", "summary.json",
                 "eval/val.json", "plots/curves.png", "plots/confusion_val.png"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp"))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
            "images_per_s"} <= set(lines[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_val_accuracy"] == max(x["val_accuracy"] for x in lines)
    assert summary["val"]["n"] == 200
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["optim"]["name"] == "rmsprop"  # the cnn recipe
    assert config["task_info"]["image_shape"] == [3, 32, 32]

    r = run_cli("evaluate", out, "--json")
    assert r.code == 0, r.err
    metrics = json.loads(r.out)
    assert metrics["accuracy"] == pytest.approx(summary["val"]["accuracy"])
    assert set(metrics["per_class"]) == set(config["task_info"]["classes"])
    assert sum(map(sum, metrics["confusion"])) == 200

    img = tmp_path / "x.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(img)  # any size: resized to the run's
    r = run_cli("predict", out, img, "--top-k", "3", "--json")
    assert r.code == 0, r.err
    pred = json.loads(r.out)[0]
    assert len(pred["top"]) == 3
    probs = [t["probability"] for t in pred["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    r = run_cli("predict", out, bad)
    assert r.code == 2 and "bad.png" in r.err


def test_learns_the_generated_data(tmp_path, run_cli):
    """A small CNN must beat chance (10%) by far within a few epochs: the loop really trains."""
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "classic-cnn-gap-bn", "--data", "generated",
                "--epochs", "3", "--out", out, "--set", "data.limit=3000", "--quiet")
    assert r.code == 0, r.err
    assert json.loads((out / "summary.json").read_text())["val"]["accuracy"] > 0.5


def test_evaluate_on_other_data_matches_classes_by_name(tmp_path, run_cli):
    train_dir = write_image_folder(tmp_path / "train", classes=("ant", "bee", "cow"), per_class=12)
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "cnn", "--data", train_dir, "--epochs", "1",
                "--out", out, "--set", "data.val_size=6", "--quiet")
    assert r.code == 0, r.err
    other = write_image_folder(tmp_path / "other", classes=("cow", "ant"), per_class=3)
    r = run_cli("evaluate", out, "--data", other, "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["n"] == 6 and result["per_class"]["bee"]["support"] == 0
    assert result["per_class"]["cow"]["support"] == 3
    strange = write_image_folder(tmp_path / "strange", classes=("ant", "yak"), per_class=2)
    r = run_cli("evaluate", out, "--data", strange)
    assert r.code == 2 and "'yak'" in r.err
    r = run_cli("evaluate", out, "--split", "test")
    assert r.code == 2 and "no test split" in r.err


def test_evaluate_test_split_of_cifar_python(tmp_path, run_cli):
    data = write_cifar_python(tmp_path / "d", per_batch=40)
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "cnn", "--data", data, "--epochs", "1", "--out", out,
                "--quiet")
    assert r.code == 0, r.err
    result = json.loads(run_cli("evaluate", out, "--split", "test", "--json").out)
    assert result["n"] == 40 and result["split"] == "test"


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nnlab", "train", *extra] if extra[:1] == ("--resume",) else [
        sys.executable, "-m", "nnlab", "train", "image", "--model", "cnn-dropout", "--data",
        "generated", "--epochs", "4", "--out", str(out), "--set", "data.limit=1500",
        "--set", "data.augment=crop-flip", "--set", "schedule.name=cosine",
        "--set", "train.threads=1", "--quiet"]


def test_resume_after_kill_gives_the_same_weights(tmp_path):
    """Kill a run after its first epoch, resume it, and compare with an uninterrupted run."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    metrics = killed / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if (killed / "last.pt").is_file():  # first epoch checkpointed: kill it mid-way
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    done = metrics.read_text().count("\n")
    assert 1 <= done < 4

    r = subprocess.run(_train_cmd(killed, "--resume", str(killed)), env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch" in r.stderr
    a, b = load_file(str(straight / "best.safetensors")), load_file(str(killed / "best.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    last_a = torch.load(straight / "last.pt", weights_only=True)["model"]
    last_b = torch.load(killed / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [x["epoch"] for x in rows] == [1, 2, 3, 4]
    straight_rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [x["val_loss"] for x in rows] == [x["val_loss"] for x in straight_rows]


def test_resume_refuses_a_finished_run(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "image", "--model", "cnn", "--data", "generated", "--epochs", "1",
                   "--out", out, *TINY).code == 0
    r = run_cli("train", "--resume", out)
    assert r.code == 2 and "already finished" in r.err


def test_early_stopping_and_plateau(tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "cnn", "--data", "generated", "--epochs", "30",
                "--out", out, *TINY, "--set", "optim.lr=1e-7", "--set", "train.early_stop_patience=2",
                "--set", "schedule.name=plateau", "--set", "schedule.patience=0")
    assert r.code == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs_run"] < 30


@pytest.mark.parametrize("name", ["constant", "step", "cosine", "warmup-linear"])
def test_schedules(name):
    cfg = ScheduleConfig(name=name, warmup_epochs=1, step_size=2, gamma=0.5)
    values = [lr_multiplier(cfg, s, total_steps=100, steps_per_epoch=10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)  # warm-up
    assert all(0 <= v <= 1 for v in values)
    if name in ("cosine", "warmup-linear"):
        assert values[-1] < 0.05
    if name == "step":
        assert values[25] == pytest.approx(0.5)


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, run_cli):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        out = tmp_path / "run"
        r = run_cli("train", "image", "--model", "cnn", "--data", "generated", "--epochs", "1",
                    "--out", out, *TINY, "--set", "train.tensorboard=true")
        assert r.code == 2 and "nnlab[tensorboard]" in r.err
        assert not out.exists()
    else:
        pytest.skip("tensorboard is installed")


def test_compiled_training_saves_the_plain_module(tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "classic-cnn-gap", "--data", "generated",
                "--epochs", "1", "--out", out, "--set", "train.compile=true", *TINY)
    assert r.code == 0, r.err
    weights = load_file(out / "best.safetensors")
    assert weights and not any(k.startswith("_orig_mod") for k in weights)  # loadable uncompiled
    r = run_cli("evaluate", out, "--json")
    assert r.code == 0, r.err


TRAIN_STEPS = """
import resource, sys, torch
from torch import nn
if sys.argv[1] == "retain":
    from nnlab.allocator import retain_freed_memory
    assert retain_freed_memory()
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))  # 64 MiB activations
for step in range(8):
    if step == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_minflt - before, usage.ru_maxrss)
"""


@pytest.mark.skipif(sys.platform != "linux" or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="glibc only")
def test_retained_memory_spares_training_steps_their_page_faults():
    def measure(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", TRAIN_STEPS, mode], capture_output=True,
                             text=True, check=True)
        faults, peak_kib = out.stdout.split()
        return int(faults), int(peak_kib)

    (plain, plain_peak), (retained, retained_peak) = measure("plain"), measure("retain")
    assert plain > 6 * 64 * 2**20 // 4096  # each step maps its activations anew
    assert retained < plain // 10
    assert retained_peak < 1.6 * plain_peak  # some fragmentation (about +25%), no growth per step
