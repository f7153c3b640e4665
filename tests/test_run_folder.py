"""The run folder can be trusted: checkpoints load without running code, one process writes a
folder at a time, killed writes leave nothing behind, files get the umask's permissions, and
a run that fails before its first checkpoint leaves no folder in the way."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from test_bad_input import assert_clean_failure

from conftest import write_cifar_python
from nnlab import fileio, runs
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write_json, folder_lock
from nnlab.runs import RunDir


def train_tiny(run_cli, tmp_path: Path, out: Path, *extra: str, epochs: int = 1):
    data = tmp_path / "d"
    if not data.exists():
        write_cifar_python(data)
    return run_cli("train", "image", "--model", "cnn", "--data", data, "--epochs", str(epochs),
                   "--out", out, "--quiet", *extra)


def unfinish(run: Path) -> None:
    """Make a finished run look killed after its last checkpoint (resumable)."""
    (run / "summary.json").unlink()


def test_a_crafted_checkpoint_is_refused_and_runs_no_code(tmp_path, run_cli):
    run = tmp_path / "run"
    assert train_tiny(run_cli, tmp_path, run).code == 0
    unfinish(run)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"epoch": Payload()}, run / "last.pt")
    r = run_cli("train", "--resume", run)
    assert_clean_failure(r, "last.pt", "unreadable or unsafe checkpoint")
    assert not marker.exists(), "loading the checkpoint ran code"


def test_checkpoints_load_with_weights_only(tmp_path, run_cli):
    run = tmp_path / "run"
    assert train_tiny(run_cli, tmp_path, run, "--set", "train.lookahead=true",
                      "--set", "train.lookahead_start_epoch=0",
                      "--set", "train.lookahead_every=1", epochs=2).code == 0
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["lookahead"] is not None
    assert isinstance(checkpoint["rng"]["numpy"]["keys"], torch.Tensor)


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path, run_cli):
    run = tmp_path / "run"
    assert train_tiny(run_cli, tmp_path, run, epochs=2).code == 0
    unfinish(run)
    with folder_lock(run):  # another process training or resuming this run
        r = run_cli("train", "--resume", run)
    assert_clean_failure(r, str(run), "in use by another nnlab process", "pid ")
    assert not (run / "summary.json").exists()
    r = run_cli("train", "--resume", run)  # the lock went with its holder
    assert r.code == 0, r.err
    assert [m["epoch"] for m in RunDir(run).read_metrics()] == [1, 2]


def test_the_lock_names_its_holder(tmp_path):
    with folder_lock(tmp_path), pytest.raises(NnlabError, match=f"pid {os.getpid()}"), \
            folder_lock(tmp_path):
        pass


def test_resume_removes_the_temporaries_of_a_killed_write(tmp_path, run_cli):
    run = tmp_path / "run"
    assert train_tiny(run_cli, tmp_path, run).code == 0
    unfinish(run)
    (run / "last.pt").unlink()  # killed in epoch 1, while writing its first checkpoint
    stale = [run / ".last.pt.abc123.tmp", run / "plots" / ".curves.png.x.tmp"]
    for f in stale:
        f.write_bytes(b"half a file")
    assert run_cli("train", "--resume", run).code == 0
    assert not any(f.exists() for f in stale)


def test_files_get_the_umask_permissions(tmp_path, run_cli):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert train_tiny(run_cli, tmp_path, run).code == 0
    finally:
        os.umask(old)
    written = [p for p in [*run.rglob("*"), *(tmp_path / "cache").rglob("*")] if p.is_file()]
    assert any(p.name == "best.safetensors" for p in written)
    assert any(p.suffix == ".safetensors" and "cache" in p.parts for p in written)
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_a_run_that_fails_in_its_first_epoch_leaves_no_folder(tmp_path, run_cli):
    run = tmp_path / "run"
    r = train_tiny(run_cli, tmp_path, run, "--set", "optim.lr=1e30", "--set", "optim.name='sgd'")
    assert_clean_failure(r, "epoch 1", "diverged", out_dir=run, after_progress=True)
    assert train_tiny(run_cli, tmp_path, run).code == 0  # the same command runs again


def test_a_full_disk_while_checkpointing_is_one_line_and_resumable(tmp_path, run_cli, monkeypatch):
    run = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):  # the 2nd checkpoint hits a full disk, as torch reports it
        calls.append(f)
        if len(calls) == 2:
            Path(f).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(runs.torch, "save", save)
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 0)
    r = train_tiny(run_cli, tmp_path, run, epochs=3)
    assert_clean_failure(r, "last.pt", "no space left on device", after_progress=True)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1  # the old one, whole
    assert not list(run.glob(".*.tmp"))
    monkeypatch.undo()
    r = run_cli("train", "--resume", run)
    assert r.code == 0, r.err
    assert [m["epoch"] for m in RunDir(run).read_metrics()] == [1, 2, 3]


def test_json_is_never_written_with_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert not list(tmp_path.iterdir())
