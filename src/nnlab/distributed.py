"""Data-parallel training on PyTorch's own engine: torchrun + DistributedDataParallel.

`torchrun --nproc_per_node N -m nnlab train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `init()` joins them into one process group (nccl on CUDA, gloo on CPU).
Every rank builds the same global batch from the same per-epoch permutation and keeps its
own slice of it (`shard`), so a run with global batch B on N processes takes the steps a
single process with batch B takes: DDP averages the ranks' gradients, and `scale_loss`
weights each rank's loss by its share of the batch's examples, which keeps the average exact
when slices differ in size (losses are means over examples: images, sentences, pairs).
Rank 0 alone writes the run folder. Per-epoch validation is split between the ranks: image
sums are all-reduced, text predictions gathered (span F1 over an O-offset sweep and Pearson r
need all of them). Rank 0's figures are then broadcast, so all ranks take the same decisions
(best epoch, plateau steps, early stop).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nnlab.errors import NnlabError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()
_current = SINGLE


def current() -> Dist:
    return _current


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Rank 0's work after training (final evaluation, plots, reports) runs as a single
    process: no collective may wait on ranks that have already finished."""
    global _current
    saved, _current = _current, SINGLE
    try:
        yield
    finally:
        _current = saved


def launched() -> bool:
    """True in a process started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> Dist:
    """Join the process group torchrun describes; a no-op in a single process."""
    global _current
    if not launched():
        return SINGLE
    if dist.is_initialized():
        return _current
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)  # "cuda" then means this rank's own GPU
    dist.init_process_group("nccl" if cuda else "gloo")
    _current = Dist(rank, world, local)
    return _current


# how long ranks that finished wait at the end for rank 0's final evaluation and report
FINISH_WAIT = datetime.timedelta(hours=12)


def shutdown(ok: bool = True) -> None:
    """Leave the process group. After a clean run, every rank first waits for the others (rank
    0 evaluates and writes the report alone, after the rest have finished): a rank that tore
    its gloo group down while rank 0 still held it was seen to abort ("terminate called
    without an active exception", 1 run in a few hundred). After a failure the destroy is
    skipped: it is collective and would wait on ranks that may never come; torchrun stops
    them once this rank exits non-zero."""
    global _current
    if dist.is_initialized() and ok:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=FINISH_WAIT)
            else:
                dist.barrier()
        except (RuntimeError, dist.DistError):  # another rank failed: torchrun reports it
            _current = SINGLE
            return
        dist.destroy_process_group()
    _current = SINGLE


def shard(idx: Any) -> tuple[Any, int]:
    """This rank's slice of a global batch of indices (a list or a 1-d tensor), and how many
    examples all ranks hold together: every world-th element from the rank's own offset, so
    slices differ in size by at most one. The training loop calls it; tasks never do.

    Every rank must step, so a last batch smaller than the world lends its first examples
    again to the ranks it cannot feed (they then count twice in that one step)."""
    d = _current
    if not d.enabled:
        return idx, len(idx)
    mine = idx[d.rank % len(idx) :: d.world] if d.rank >= len(idx) else idx[d.rank :: d.world]
    return mine, max(len(idx), d.world)


def scale_loss(loss: torch.Tensor, count: int, total: int) -> torch.Tensor:
    """Weight a rank's mean loss so that DDP's gradient average is the global batch mean.

    `count` is the number of examples the loss is a mean over on this rank, `total` what
    `shard` handed out to all ranks together: no communication per step. The rank's loss is
    multiplied by world * count / total.
    """
    d = _current
    if not d.enabled:
        return loss
    return loss * (d.world * count / total)


def broadcast(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank."""
    if not _current.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums over all ranks of a few numbers (float64, so counts stay exact)."""
    if not _current.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_in_order(n: int, idx: list[int], items: list[Any]) -> list[Any]:
    """Every rank's `items` (one per index in its `idx`) put together in index order 0..n-1,
    on every rank: per-epoch validation split between ranks, scored on the whole split."""
    if not _current.enabled:
        return items
    parts: list[tuple[list[int], list[Any]] | None] = [None] * _current.world
    dist.all_gather_object(parts, (idx, items))
    out: list[Any] = [None] * n
    for part in parts:
        assert part is not None
        for i, item in zip(*part, strict=True):
            out[i] = item
    return out


def my_indices(n: int) -> list[int]:
    """This rank's share of n evaluation items (every world-th, from its own offset)."""
    return list(range(_current.rank, n, _current.world))


def barrier() -> None:
    if _current.enabled:
        dist.barrier()


def check_agreement(what: dict[str, Any]) -> None:
    """Fail on every rank, naming the field, when ranks disagree on config or data."""
    d = _current
    if not d.enabled:
        return
    digests = {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()
               for k, v in what.items()}
    gathered: list[dict[str, str] | None] = [None] * d.world
    dist.all_gather_object(gathered, digests)
    for key in digests:
        values = {g[key] for g in gathered if g is not None}
        if len(values) > 1:
            ranks = [r for r, g in enumerate(gathered) if g and g[key] != gathered[0][key]]  # type: ignore[index]
            raise NnlabError(f"ranks disagree on the {key} (ranks {ranks} differ from rank 0): "
                             "every rank must run the same command on the same data")
