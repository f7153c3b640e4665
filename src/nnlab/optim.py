"""Optimisers and learning-rate schedules from the config.

Schedules other than `plateau` are per-step multipliers of the base learning rate (a
LambdaLR stepped after every optimiser step), so warm-up and decay are smooth within an
epoch; `plateau` is PyTorch's ReduceLROnPlateau on the validation metric, stepped per epoch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from nnlab.config import OptimConfig, ScheduleConfig
from nnlab.errors import NnlabError
from nnlab.muon import Muon

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Three groups: weights (>= 2-d), other biases, and normalisation-layer parameters; with
    `optim.name=muon` a fourth, the convolution filters (>= 3-d), taken out of the weights.

    By default 1-d parameters get no weight decay (it only hurts them). airbench decays them
    too (`bias_decay`) and gives batch-norm shifts a 64x learning rate (`norm_lr_scale`),
    dividing their weight decay by the same factor so the decay per step stays the weights'.
    A module with a `fine_tune_lr` attribute (pretrained layers trained inside a new model)
    gets the same three groups again at that learning rate, under the same schedule.
    Frozen parameters are included: a model may unfreeze them later (set_epoch).
    """
    tuned: dict[int, float] = {}  # parameter id -> its module's own learning rate
    for module in model.modules():
        if getattr(module, "fine_tune_lr", None) is not None:
            tuned |= {id(p): float(module.fine_tune_lr) for p in module.parameters()}
    scale = cfg.norm_lr_scale
    vector_decay = cfg.weight_decay if cfg.bias_decay else 0.0
    groups: dict[tuple[str, float], dict] = {}

    def add(kind: str, p: nn.Parameter) -> None:
        lr = tuned.get(id(p), cfg.lr)
        if (kind, lr) not in groups:
            decay = {"weights": cfg.weight_decay, "biases": vector_decay,
                     "norms": vector_decay / scale}[kind]
            groups[kind, lr] = {"params": [], "weight_decay": decay,
                                "lr": lr * scale if kind == "norms" else lr}
        groups[kind, lr]["params"].append(p)

    for module in model.modules():
        for p in module.parameters(recurse=False):
            add("norms" if isinstance(module, NORM_LAYERS) else "weights" if p.ndim > 1 else "biases", p)
    if cfg.name == "muon":
        main = groups.get(("weights", cfg.lr), {"params": []})
        filters = [p for p in main["params"] if p.ndim >= 3]
        if not any(p.requires_grad for p in filters):
            raise NnlabError("optim.name=muon: the model has no trainable convolution filters "
                             "(Muon here is for convolution nets)")
        main["params"] = [p for p in main["params"] if p.ndim < 3]
    order = ("weights", "biases", "norms")  # the model's own groups first, as before
    result = [g for (kind, lr), g in sorted(groups.items(),
                                            key=lambda kv: (kv[0][1] != cfg.lr, order.index(kv[0][0])))]
    if cfg.name == "muon":
        result.append({"params": filters, "muon": True, "lr": cfg.muon_lr,
                       "momentum": cfg.muon_momentum, "nesterov": cfg.nesterov})
    return [g for g in result if g["params"]]


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "muon":
        return Muon(groups, lr=cfg.lr, momentum=cfg.momentum,
                    nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps,
                                   momentum=cfg.momentum)
    if cfg.name == "adadelta":  # MaLSTM's choice; rho is Adadelta's decay (alpha here)
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.alpha, eps=cfg.eps)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def lr_multiplier(cfg: ScheduleConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate factor after `step` optimiser steps (0-based) for per-step schedules."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.start_lr_ratio + (1 - cfg.start_lr_ratio) * (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** (step // max(1, cfg.step_size * steps_per_epoch))
    progress = (step - warmup) / max(1, total_steps - warmup)  # 0 -> 1 after warm-up
    progress = min(progress, 1.0)
    low = cfg.final_lr_ratio
    if cfg.name == "cosine":
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "warmup-linear":
        return low + (1 - low) * (1 - progress)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def build_scheduler(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, epochs: int,
                    steps_per_epoch: int, higher_is_better: bool) -> LRScheduler | ReduceLROnPlateau:
    if cfg.name == "plateau":
        return ReduceLROnPlateau(optimizer, mode="max" if higher_is_better else "min",
                                 factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr)
    total = epochs * steps_per_epoch
    return LambdaLR(optimizer, lambda step: lr_multiplier(cfg, step, total, steps_per_epoch))


class Lookahead:
    """airbench's lookahead-EMA: every few steps the weights move to an exponential moving
    average of themselves, whose decay warms up over training (move fast early, average
    strongly late). Floating-point buffers (batch-norm statistics) are averaged too."""

    def __init__(self, model: nn.Module):
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()
                    if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        for key, value in model.state_dict().items():
            if key in self.ema:
                self.ema[key].lerp_(value, 1 - decay)
                value.copy_(self.ema[key])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.ema

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.ema[key].copy_(value)
