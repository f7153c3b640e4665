"""Where a study's jobs and a search's trials run: in this process, one after another, or on
Ray, spread over processes, GPUs and machines.

A job is one training run into one run folder (a study's variant at one seed, a search's
trial). Both executors take the same jobs and give the same folders, so reports, resume and
evaluation do not care where a run came from:

- `InProcess` trains each job here in turn, printing its epochs (`--workers 1`, the default,
  and the only executor without the `ray` extra).
- `RayExecutor` sends each job to a Ray worker that asks for `threads` CPUs (torch's threads
  are set to them) and `gpus` GPUs. Without an address Ray starts inside the command (no
  dashboard, a small object store) and stops at its end; with one it joins that cluster.

Run folders reach the driver's `--out` through the file system: workers write them in place,
so on a cluster `--out` must be on a file system every node mounts (NFS, a SLURM job's shared
scratch). The driver checks that before anything trains (each node must see a probe file).

Failure and restart: a job that finds its folder finished returns at once; one that finds a
checkpoint (`last.pt`) resumes from it; the run folder's lock keeps two processes out of one
folder. So a killed driver reruns the same command and loses nothing, and a worker killed
with `kill -9` is retried by Ray (`max_retries`), resuming from `last.pt`: resume truncates
`metrics.jsonl` to the checkpoint, so no epoch is logged twice.

Each finished epoch is reported to the driver (a small Ray actor, `Board`), which shows one
live line per running job and asks its `hook` whether to stop the job there (a search's
pruner); the job waits for that verdict before its next epoch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from nnlab.config import RunConfig
from nnlab.errors import NnlabError, short
from nnlab.experiment import resume_run, train_run
from nnlab.fileio import atomic_write_json, read_json
from nnlab.runs import RunDir

# (job name, epoch record) -> True to stop that job after this epoch
Hook = Callable[[str, dict[str, Any]], bool]
RAY_EXTRA = "pip install 'nnlab[ray]'"
OBJECT_STORE_BYTES = 100 << 20  # jobs pass configs and summaries, never tensors
VERDICT_WAIT_S = 120.0  # a job waits this long for the driver's verdict on an epoch, then goes on
RETRIES = 3  # Ray runs a job again this often when its worker dies (kill -9, a lost node)


@dataclass
class Job:
    """One run: its name (a label for people), its folder, and the config of a new run."""

    name: str
    path: Path
    cfg: RunConfig


@dataclass
class Done:
    job: Job
    summary: dict[str, Any] | None  # the run's summary.json, or None when it failed
    error: str = ""  # why it failed (one line)
    state: str = "trained"  # trained | resumed | finished (skipped: done before)


@dataclass(frozen=True)
class Resources:
    """What each job gets: `workers` jobs at a time (local Ray), `threads` CPU threads each,
    `gpus` GPUs each (fractions share a GPU), and a cluster `address` to join."""

    workers: int = 1
    threads: int = 0  # 0: the cores divided among the workers (1 on a cluster)
    gpus: float = 0.0
    address: str | None = None

    @property
    def ray(self) -> bool:
        return self.workers > 1 or self.address is not None or self.gpus > 0

    def threads_per_job(self) -> int:
        if self.threads:
            return self.threads
        return 1 if self.address else max(1, (os.cpu_count() or 1) // self.workers)

    def check(self) -> None:
        if not 1 <= self.workers <= 4096:
            raise NnlabError(f"--workers: from 1 to 4096, got {self.workers}")
        if not 0 <= self.threads <= 1024:
            raise NnlabError(f"--threads: from 0 (automatic) to 1024, got {self.threads}")
        if not 0 <= self.gpus <= 64:  # False for NaN too
            raise NnlabError(f"--gpus: GPUs per job from 0 to 64, got {self.gpus}")


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise NnlabError(f"--workers/--ray-address: needs the extra: {RAY_EXTRA}") from None
    return ray


def executor_for(resources: Resources, console: Console, progress: bool = True) -> Executor:
    resources.check()
    if resources.ray:
        return RayExecutor(resources, console, progress)
    return InProcess(console, progress)


# -- one job, wherever it runs ------------------------------------------------------------------
def run_job(job: Job, console: Console, progress: bool,
            on_epoch: Callable[[dict[str, Any]], bool] | None, node: str | None = None) -> Done:
    """Train, resume or skip one job's run folder; NnlabError becomes a failed Done (one line)."""
    run = RunDir(job.path)
    try:
        if job.path.is_dir() and run.finished:
            return Done(job, read_json(job.path / "summary.json"), state="finished")
        if (job.path / "last.pt").is_file():
            state = "resumed"
            resume_run(job.path, console, progress, on_epoch=on_epoch)
        else:
            state = "trained"
            if job.path.exists():  # started, but no epoch finished: start again
                shutil.rmtree(job.path)
            train_run(job.cfg, job.path, console, progress=progress, on_epoch=on_epoch)
    except NnlabError as e:
        return Done(job, None, short(e, 500))
    summary = read_json(job.path / "summary.json")
    if node is not None:  # which machine trained it (a cluster's node id)

        summary["node"] = node
        atomic_write_json(job.path / "summary.json", summary)
    return Done(job, summary, state=state)


class Executor:
    """Submit jobs; `wait` returns finished ones (at least one while any is pending)."""

    hook: Hook | None = None
    capacity = 1  # jobs that run at a time

    def submit(self, job: Job) -> None:
        raise NotImplementedError

    def wait(self) -> list[Done]:
        raise NotImplementedError

    def pending(self) -> int:
        raise NotImplementedError

    def run_all(self, jobs: list[Job]) -> list[Done]:
        """Every job, finished in any order; returned in the order given."""
        for job in jobs:
            self.submit(job)
        done: dict[str, Done] = {}
        while self.pending():
            for d in self.wait():
                done[d.job.name] = d
        return [done[j.name] for j in jobs]

    def close(self) -> None:
        """Release what the executor started (a local Ray)."""


class InProcess(Executor):
    """Each job here, in turn, its epochs printed as a single run's are."""

    def __init__(self, console: Console, progress: bool = True):
        self.console, self.progress = console, progress
        self.queue: list[Job] = []

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def pending(self) -> int:
        return len(self.queue)

    def wait(self) -> list[Done]:
        job = self.queue.pop(0)
        hook = self.hook
        if job.path.is_dir() and RunDir(job.path).finished:
            self.console.print(f"[dim]{escape(job.name)}: already finished, skipped[/]")
        else:
            self.console.rule(escape(job.name))
        done = run_job(job, self.console, self.progress,
                       (lambda record: hook(job.name, record)) if hook else None)
        if done.error:
            self.console.print(f"[red]{escape(job.name)}: failed: {escape(done.error)}[/]")
        return [done]


# -- Ray -----------------------------------------------------------------------------------------
def _board_class(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class Board:
        """The driver's mailbox: jobs post each epoch's record and read the verdict on it."""

        def __init__(self) -> None:
            self.reports: list[tuple[str, dict[str, Any]]] = []
            self.verdicts: dict[tuple[str, int], bool] = {}

        def report(self, job: str, record: dict[str, Any]) -> None:
            self.reports.append((job, record))

        def take(self) -> list[tuple[str, dict[str, Any]]]:
            reports, self.reports = self.reports, []
            return reports

        def decide(self, job: str, epoch: int, stop: bool) -> None:
            self.verdicts[(job, epoch)] = stop

        def verdict(self, job: str, epoch: int) -> bool | None:
            return self.verdicts.pop((job, epoch), None)

    return Board


def _remote_job(job: Job, threads: int, board: Any, wait_verdict: bool, probe: str) -> Done:
    """A job inside a Ray worker: torch's threads set to the job's CPUs; each epoch posted to
    the driver's board (and, for a search, its verdict awaited)."""
    import ray
    import torch

    if not Path(probe).is_file():
        where = ray.util.get_node_ip_address()
        return Done(job, None, f"{job.path.parent}: not visible on this node ({where}): --out must be "
                               "on a file system every node mounts")
    torch.set_num_threads(threads)
    node = ray.get_runtime_context().get_node_id()

    def on_epoch(record: dict[str, Any]) -> bool:
        epoch = int(record["epoch"])
        ray.get(board.report.remote(job.name, record))
        if not wait_verdict:
            return False
        deadline = time.monotonic() + VERDICT_WAIT_S
        while time.monotonic() < deadline:
            verdict = ray.get(board.verdict.remote(job.name, epoch))
            if verdict is not None:
                return verdict
            time.sleep(0.05)
        return False  # the driver is gone or stuck: train on

    return run_job(job, Console(quiet=True), False, on_epoch, node)


class RayExecutor(Executor):
    """Jobs as Ray tasks, `threads` CPUs (and `gpus` GPUs) each; the driver shows one live
    line per running job and an overall bar."""

    def __init__(self, resources: Resources, console: Console, progress: bool = True):
        self.ray = require_ray()
        self.resources, self.console, self.progress = resources, console, progress
        self.threads = resources.threads_per_job()
        self.started_here = False
        if not self.ray.is_initialized():
            self._init()
            self.started_here = True
        self.board = _board_class(self.ray).remote()
        self.remote = self.ray.remote(_remote_job).options(
            num_cpus=self.threads, num_gpus=resources.gpus, max_retries=RETRIES, retry_exceptions=False)
        self.refs: dict[Any, Job] = {}  # handed to Ray
        self.queue: list[Job] = []  # not yet
        self.capacity = self._capacity()
        self.rows: dict[str, dict[str, Any]] = {}  # job -> its last epoch record
        self.finished = 0
        self.total = 0
        self.probes: dict[Path, Path] = {}  # run folders' parent -> its probe file
        self.live: Any = None

    def _capacity(self) -> int:
        """Jobs handed to Ray at a time: `workers`; on a cluster without --workers, as many
        as its CPUs (or GPUs) hold."""
        r = self.resources
        if not r.address or r.workers > 1:
            return r.workers
        total = self.ray.cluster_resources()
        fits = int(total.get("CPU", 1)) // self.threads
        if r.gpus:
            fits = min(fits, int(total.get("GPU", 0) / r.gpus))
        return max(1, fits)

    def _init(self) -> None:
        ray, r = self.ray, self.resources
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": "error", "configure_logging": True}
        if r.address:
            try:
                ray.init(address=r.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise NnlabError(f"--ray-address {r.address}: cannot join the cluster "
                                 f"({short(e, 200)})") from None
            return
        import torch

        gpus = torch.cuda.device_count() if r.gpus else 0
        if r.gpus and gpus < r.gpus:
            raise NnlabError(f"--gpus {r.gpus:g}: this machine has {gpus} GPUs")
        # Ray schedules by the CPUs declared, not those present: `workers` jobs of `threads`
        # CPUs each fit at a time, whatever the machine has
        ray.init(num_cpus=r.workers * self.threads, num_gpus=gpus, object_store_memory=OBJECT_STORE_BYTES,
                 **kwargs)

    def submit(self, job: Job) -> None:
        """Queue a job; at most `capacity` are handed to Ray at a time. A backlog of queued Ray
        tasks makes Ray start spare worker processes, kill them when idle and start them
        again: measured on 2 cores, 12 queued jobs ran 1.5x slower per epoch than 2 jobs at a
        time, the churn taking a third of the CPU."""
        self.queue.append(job)
        self.total += 1

    def _fill(self) -> None:
        while self.queue and len(self.refs) < self.capacity:
            self._start(self.queue.pop(0))

    def _start(self, job: Job) -> None:
        folder = job.path.parent
        if folder not in self.probes:  # a file every node must see, or its jobs fail at once
            folder.mkdir(parents=True, exist_ok=True)
            self.probes[folder] = folder / f".nnlab-probe-{uuid.uuid4().hex[:8]}"
            self.probes[folder].touch()
        ref = self.remote.remote(job, self.threads, self.board, self.hook is not None,
                                 str(self.probes[folder]))
        self.refs[ref] = job

    def pending(self) -> int:
        return len(self.refs) + len(self.queue)

    def wait(self) -> list[Done]:
        self._fill()
        with self._display():
            while True:
                ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=0.25)
                self._drain()
                if ready:
                    break
        done = []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        for ref in ready:
            job = self.refs.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as e:  # the task failed past its retries (a bug, a lost node)
                result = Done(job, None, short(f"{type(e).__name__}: {e}", 500))
            self.rows.pop(job.name, None)
            self.finished += 1
            self._print_done(result)
            done.append(result)
        return done

    def _drain(self) -> None:
        """Epoch reports from the board: shown, and put to the hook (a search's pruner)."""
        for name, record in self.ray.get(self.board.take.remote()):
            self.rows[name] = record
            if self.hook is not None:
                stop = bool(self.hook(name, record))
                self.board.decide.remote(name, int(record["epoch"]), stop)
        if self.live is not None:
            self.live.update(self._table())

    def _table(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_row(ProgressBar(total=max(self.total, 1), completed=self.finished, width=40),
                      f"{self.finished}/{self.total} runs done, {len(self.refs)} running, "
                      f"{len(self.queue)} waiting")
        for name, r in sorted(self.rows.items()):
            metric = next((f"{k[4:]} {v:.4f}" for k, v in r.items()
                           if k.startswith("val_") and k != "val_loss" and isinstance(v, float)), "")
            table.add_row(escape(name), f"epoch {r['epoch']}  {metric}  val loss {r.get('val_loss', 0):.4f}")
        return table

    @contextlib.contextmanager
    def _display(self) -> Iterator[None]:
        if not self.progress or not self.console.is_terminal or self.live is not None:
            yield
            return
        from rich.live import Live

        with Live(self._table(), console=self.console, refresh_per_second=4, transient=True) as live:
            self.live = live
            try:
                yield
            finally:
                self.live = None

    def _print_done(self, d: Done) -> None:
        if d.error:
            self.console.print(f"[red]{escape(d.job.name)}: failed: {escape(d.error)}[/]")
            return
        if d.state == "finished":
            self.console.print(f"[dim]{escape(d.job.name)}: already finished, skipped[/]")
            return
        s = d.summary or {}
        metric = s.get("main_metric", "")
        value = (s.get("val") or {}).get(metric)
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        self.console.print(f"{escape(d.job.name)}: {d.state}, best epoch {s.get('best_epoch')}: "
                           f"validation {metric} {shown}" + (" (pruned)" if s.get("pruned") else ""))

    def close(self) -> None:
        for probe in self.probes.values():
            probe.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            self.ray.kill(self.board)
        if self.started_here:
            self.ray.shutdown()
