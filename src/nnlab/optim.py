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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm parameters (1-d tensors): it only hurts them."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps,
                                   momentum=cfg.momentum)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def lr_multiplier(cfg: ScheduleConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate factor after `step` optimiser steps (0-based) for per-step schedules."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
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
