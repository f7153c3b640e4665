"""The one training loop, for every task: optimiser, schedule, checkpoints, resume, early
stopping, progress and per-epoch metrics.

Determinism: every epoch reseeds torch (and the task's data generator) from
(seed, epoch), so the data order, augmentation and dropout of epoch e do not depend on
what ran before it. Resuming from the checkpoint of epoch e therefore replays epochs
e+1.. exactly as an uninterrupted run would (on CPU, same thread count); the RNG states
are saved in the checkpoint as well and restored on resume.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from nnlab import distributed, plots
from nnlab.config import RunConfig
from nnlab.device import Runtime
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write_json
from nnlab.optim import Lookahead, build_optimizer, build_scheduler
from nnlab.runs import RunDir, run_summary
from nnlab.tasks.base import EpochAware, Task


@dataclass
class LoopState:
    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    best: float | None = None  # best validation main metric so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**63)


def rng_states() -> dict[str, Any]:
    """Every generator's state as tensors, lists and numbers only, so the checkpoint loads with
    `torch.load(weights_only=True)` (numpy's state would need its classes unpickled)."""
    algorithm, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"algorithm": algorithm, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n, p = states["numpy"], states["python"]
    np.random.set_state((n["algorithm"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TaskStep(nn.Module):
    """The task's training step as a module, so DistributedDataParallel sees every use of
    the parameters (a CRF's loss, a Siamese head) inside one forward call."""

    def __init__(self, task: Task, model: nn.Module):
        super().__init__()
        self.task, self.model = task, model

    def forward(self, batch: Any):
        return self.task.step(self.model, batch)


# called after each epoch (logged and checkpointed) with its record; True stops training there
# (a search pruning a weak trial); the run then finishes as usual, from its best epoch
EpochHook = Callable[[dict[str, Any]], bool]


class Trainer:
    pruned = False

    def __init__(self, task: Task, cfg: RunConfig, runtime: Runtime, run: RunDir,
                 console: Console | None = None, progress: bool = True,
                 on_epoch: EpochHook | None = None):
        self.task, self.cfg, self.runtime, self.run = task, cfg, runtime, run
        self.on_epoch = on_epoch
        self.console = console or Console(stderr=True)
        self.dist = distributed.current()
        self.show_progress = progress and self.console.is_terminal and self.dist.main
        torch.manual_seed(cfg.train.seed)  # model initialisation depends on the seed alone
        model = task.build_model()
        task.init_model(model)
        self.model = model.to(runtime.device, runtime.dtype)
        if runtime.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the training forward may run compiled; evaluation, checkpoints and lookahead use the
        # plain module, which shares its parameters
        self.step_model = torch.compile(self.model) if cfg.train.compile else self.model
        self.ddp = self._wrap_ddp() if self.dist.enabled else None
        self.optimizer = build_optimizer(cfg.optim, self.model)
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.train.epochs,
                                         task.steps_per_epoch(), task.higher_is_better)
        self.state = LoopState()
        self.lookahead: Lookahead | None = None
        self.writer = self._tensorboard() if cfg.train.tensorboard and self.dist.main else None

    def _wrap_ddp(self) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if self.cfg.train.sync_bn:
            if self.runtime.device.type != "cuda":
                raise NnlabError("train.sync_bn: SyncBatchNorm needs CUDA; on CPU each rank "
                                 "keeps its own batch statistics (leave sync_bn off)")
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        cuda = self.runtime.device.type == "cuda"
        return DistributedDataParallel(TaskStep(self.task, self.step_model),
                                       device_ids=[self.runtime.device.index or 0] if cuda else None)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise NnlabError("train.tensorboard: install the extra: pip install 'nnlab[tensorboard]'"
                             ) from None
        return SummaryWriter(str(self.run.path / "tensorboard"))

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        s = self.state
        return {
            "epoch": s.epoch, "step": s.step, "best": s.best, "best_epoch": s.best_epoch,
            "bad_epochs": s.bad_epochs, "train_seconds": s.train_seconds,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_states(),
            "lookahead": self.lookahead.state_dict() if self.lookahead else None,
        }

    def restore(self) -> None:
        # rank 0 reads the run folder (other machines may not see it) and sends its contents
        ckpt = distributed.broadcast(self.run.load_checkpoint() if self.dist.main else None)
        if ckpt is None:  # killed before the first checkpoint: start over from scratch
            if self.dist.main:
                self.run.truncate_metrics(0)
            return
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_states(ckpt["rng"])
        if ckpt.get("lookahead") is not None:
            self.lookahead = Lookahead(self.model)
            self.lookahead.load_state_dict(ckpt["lookahead"])
        s = self.state
        s.epoch, s.step, s.best, s.best_epoch = ckpt["epoch"], ckpt["step"], ckpt["best"], ckpt["best_epoch"]
        s.bad_epochs, s.train_seconds = ckpt["bad_epochs"], ckpt["train_seconds"]
        if self.dist.main:
            self.run.truncate_metrics(s.epoch)  # epochs logged after the checkpoint are replayed
        s.history = distributed.broadcast(self.run.read_metrics() if self.dist.main else None)

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg, s = self.cfg.train, self.state
        metric = self.task.main_metric
        if s.epoch:
            self.console.print(f"resuming after epoch {s.epoch} of {cfg.epochs}")
        while s.epoch < cfg.epochs and not self._should_stop():
            record = self._train_epoch(s.epoch + 1)
            # every rank evaluates; rank 0's figures decide, so all ranks choose alike
            val = distributed.broadcast(self.task.validate(self.model))
            self._check_finite(s.epoch + 1, val)
            record |= {f"val_{k}": v for k, v in val.items() if isinstance(v, int | float)}
            s.epoch += 1
            score = val[metric]
            improved = s.best is None or (
                score > s.best if self.task.higher_is_better else score < s.best)
            if improved:
                s.best, s.best_epoch, s.bad_epochs = score, s.epoch, 0
                if self.dist.main:
                    self.run.save_best(self.model.state_dict(), {"epoch": str(s.epoch)})
            else:
                s.bad_epochs += 1
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(score)
            record["best"] = improved
            if self.dist.main:
                self.run.append_metrics(record)  # metrics first: resume truncates what is ahead
                self.run.save_checkpoint(self.checkpoint())
            s.history.append(record)
            self._log_epoch(record)
            if self.on_epoch is not None and self.on_epoch(record):
                self.pruned = True  # a search stopped this trial on its validation metric
                break
        return self._finish()

    def _check_finite(self, epoch: int, val: dict[str, Any]) -> None:
        """A NaN or infinite validation figure means the model diverged (or the split is empty):
        stop with the epoch named, before it is logged, compared or saved as a best."""
        for key in (self.task.main_metric, "loss"):
            value = val.get(key)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise NnlabError(f"epoch {epoch}: validation {key} is {value}; the model diverged "
                                 "(lower optim.lr or set train.grad_clip) or the validation split is empty")

    def _should_stop(self) -> bool:
        patience = self.cfg.train.early_stop_patience
        stop = patience > 0 and self.state.bad_epochs >= patience
        if stop:
            self.console.print(f"early stop: no validation improvement in {patience} epochs")
        return stop

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg.train
        # dropout and other in-model randomness: each rank its own stream; the data order
        # (gen) is the same on every rank, which then takes its own part of each batch
        torch.manual_seed(epoch_seed(cfg.seed, epoch) + self.dist.rank)
        gen = torch.Generator(device=self.runtime.device).manual_seed(epoch_seed(cfg.seed, epoch) + 1)
        for module in self.model.modules():  # per-epoch behaviour, e.g. freezing a layer
            if isinstance(module, EpochAware):
                module.set_epoch(epoch)
        self.model.train()
        dev = self.runtime.device
        loss_sum = torch.zeros((), device=dev)  # device-side sums: no sync per step
        metric_sum = torch.zeros((), device=dev)
        count = metric_count = loss_count = 0
        train_metric = self.task.train_metric
        steps = self.task.steps_per_epoch()
        self.runtime.synchronize()
        start = time.perf_counter()
        with self._progress(epoch, steps) as bar:
            task_id = bar.add_task("train", total=steps, info="") if bar else None
            for i, indices in enumerate(self.task.train_batches(gen, epoch)):
                mine, total = distributed.shard(indices)  # this rank's part of the global batch
                batch = self.task.collate(mine, gen, epoch)
                out = self.ddp(batch) if self.ddp else self.task.step(self.step_model, batch)
                self.optimizer.zero_grad(set_to_none=True)
                distributed.scale_loss(out.loss, out.count, total).backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                if not isinstance(self.scheduler, ReduceLROnPlateau):
                    self.scheduler.step()
                self.state.step += 1
                if cfg.lookahead and epoch > cfg.lookahead_start_epoch:
                    self._lookahead_step(steps)
                loss_sum += out.loss_sum.detach()
                metric_sum += out.metric_sum.detach()
                count, loss_count, metric_count = (count + out.count, loss_count + out.loss_count,
                                                   metric_count + out.metric_count)
                if bar and ((i + 1) % cfg.log_every == 0 or i + 1 == steps):
                    rate = count / max(time.perf_counter() - start, 1e-9)
                    bar.update(task_id, completed=i + 1, info=(
                        f"loss {loss_sum.item() / max(loss_count, 1):.4f}  "
                        f"{train_metric} {metric_sum.item() / max(metric_count, 1):.4f}  "
                        f"{rate:,.0f} {self.task.unit}/s"))
        if self.lookahead is not None:
            self.lookahead.update(self.model, decay=1.0)  # end each epoch on the averaged weights
        if self.dist.enabled:  # the epoch's figures over all ranks' examples
            totals = torch.stack([loss_sum, metric_sum, *(torch.tensor(float(c), device=dev)
                                  for c in (loss_count, metric_count, count))]).double()
            torch.distributed.all_reduce(totals)
            loss_sum, metric_sum = totals[0], totals[1]
            loss_count, metric_count, count = (int(c) for c in totals[2:].tolist())
        self.runtime.synchronize()
        seconds = time.perf_counter() - start
        train_loss = loss_sum.item() / max(loss_count, 1)
        if not math.isfinite(train_loss):
            raise NnlabError(f"epoch {epoch}: training loss is {train_loss}; lower optim.lr "
                             "or set train.grad_clip")
        self.state.train_seconds += seconds
        return {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
                f"train_{train_metric}": metric_sum.item() / max(metric_count, 1),
                "seconds": seconds, f"{self.task.unit}_per_s": count / seconds}

    def _lookahead_step(self, steps_per_epoch: int) -> None:
        cfg, step = self.cfg.train, self.state.step
        if step % cfg.lookahead_every:
            return
        if self.lookahead is None:
            self.lookahead = Lookahead(self.model)
            return
        total = cfg.epochs * steps_per_epoch
        decay = cfg.lookahead_decay ** cfg.lookahead_every * (step / total) ** 3
        self.lookahead.update(self.model, decay)

    def _progress(self, epoch: int, steps: int):
        if not self.show_progress:
            return contextlib.nullcontext(None)
        return Progress(TextColumn(f"epoch {epoch}/{self.cfg.train.epochs}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), console=self.console, transient=True)

    def _log_epoch(self, r: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        m, tm, unit = self.task.main_metric, self.task.train_metric, self.task.unit
        self.console.print(
            f"epoch {r['epoch']:>3}/{self.cfg.train.epochs}  "
            f"train loss {r['train_loss']:.4f} {tm} {r[f'train_{tm}']:.4f}  "
            f"val loss {r['val_loss']:.4f} {m} {r[f'val_{m}']:.4f}  "
            f"{r[f'{unit}_per_s']:,.0f} {unit}/s  {r['seconds']:.1f}s  lr {r['lr']:.2e}"
            + ("  *" if r["best"] else ""))
        if self.writer:
            for key, value in r.items():
                if isinstance(value, int | float) and key != "epoch":
                    self.writer.add_scalar(key, value, r["epoch"])
            self.writer.flush()

    def describe(self) -> None:
        """What is about to be trained, on what, how: printed before the first epoch."""
        cfg, info, rt = self.cfg, self.task.info().data, self.runtime
        self.console.print(
            f"[bold]{escape(cfg.model.name)}[/] on {escape(str(info.path))} "
            f"({escape(str(info.format))}): {info.train_examples:,} train / "
            f"{info.val_examples:,} validation {self.task.unit}; "
            f"{count_parameters(self.model):,} parameters; {rt.device} {rt.precision}"
            f"{' channels-last' if rt.channels_last else ''}; {cfg.optim.name} lr {cfg.optim.lr:g}, "
            f"{cfg.schedule.name} schedule, batch {cfg.data.batch_size}, {cfg.train.epochs} epochs")
        line = self.task.describe()
        if line:
            self.console.print(line, markup=False, highlight=False)  # names files and words

    def _finish(self) -> dict[str, Any]:
        """The end of training: the loop's figures; then rank 0 alone evaluates the best
        weights in full (after the task's last choice on validation data, if any), writes
        eval/val.json, the plots and summary.json."""
        s = self.state
        if s.best_epoch == 0:
            raise NnlabError("training ran no epoch")
        unit, metric = self.task.unit, self.task.main_metric
        rates = [r[f"{unit}_per_s"] for r in s.history]
        summary = run_summary(self.task.name, self.cfg.model.name, metric, self.runtime) | {
            "best_epoch": s.best_epoch, f"best_val_{metric}": s.best,
            "epochs_run": s.epoch, "epochs_planned": self.cfg.train.epochs,
            "stopped_early": s.epoch < self.cfg.train.epochs,
            "pruned": self.pruned,
            "train_seconds": s.train_seconds,
            f"{unit}_per_s": sum(rates) / len(rates) if rates else None,
            "parameters": count_parameters(self.model),
        }
        if self.writer:
            self.writer.close()
        if not self.dist.main:
            return summary
        with distributed.alone():
            return self._final_evaluation(summary)

    def _final_evaluation(self, summary: dict[str, Any]) -> dict[str, Any]:
        run, task, model = self.run, self.task, self.model
        model.load_state_dict(run.load_best())  # the figures that matter: the best epoch's
        chosen = task.finalize(model)
        if chosen:  # a choice made on validation data, saved with the weights
            run.save_best(model.state_dict(), {"epoch": str(summary["best_epoch"])})
            summary |= chosen
        val = task.evaluate(model, task.val, details=True, tta=self.cfg.data.tta)
        atomic_write_json(run.path / "eval" / "val.json", val)
        summary["val"] = {k: v for k, v in val.items() if k not in task.detail_keys}
        name = self.cfg.model.name
        plots.training_curves(run.read_metrics(), task.main_metric, run.plots / "curves.png", title=name)
        task.write_plots(run.plots, val, name)
        run.write_summary(summary)
        self.console.print(f"best epoch {summary['best_epoch']}: validation {task.main_metric} "
                           f"{val[task.main_metric]:.4f}, loss {val['loss']:.4f}; run folder "
                           f"{escape(str(run.path))}")
        return summary
