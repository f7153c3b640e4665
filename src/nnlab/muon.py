"""Muon for convolution filters, SGD for everything else, in one optimiser.

Muon (Keller Jordan, 2024) replaces a weight matrix's momentum update by its nearest
semi-orthogonal matrix, computed with a few Newton-Schulz iterations: every direction of the
update moves at the same rate, so rare but useful directions are not drowned by the
dominant ones. airbench94_muon uses it for the convolution filters of the airbench net
(each filter bank flattened to out x in*k*k) and reaches 94% on CIFAR-10 in 8 epochs where
Nesterov SGD needs 10. It also re-normalises each filter bank to norm sqrt(out) before the
step; with batch norm after every convolution the scale of a filter bank is irrelevant to
the function, so this replaces weight decay for them.

Why not `torch.optim.Muon`: it accepts 2-d parameters only and has no weight
normalisation. This class subclasses `torch.optim.SGD`, so the other parameter groups get
PyTorch's own SGD step, and the learning-rate schedulers, `state_dict` and the checkpoint
code see one ordinary optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# quintic Newton-Schulz coefficients that maximise the slope at zero (Jordan, 2024): the
# singular values land in about [0.7, 1.2] rather than exactly 1, which trains as well
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T, by Newton-Schulz iteration in bfloat16.

    g: (rows, cols) -> (rows, cols) in bfloat16.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1: inside the basin
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T  # (r, r)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.SGD):
    """Groups with `muon=True` take orthogonalised Nesterov-momentum steps; the rest SGD.

    A Muon group's options: lr, momentum, nesterov, normalize (rescale each parameter to
    norm sqrt(size(0)) before its step), ns_steps. Its `weight_decay` is ignored.
    """

    def __init__(self, params: Iterable[dict[str, Any]], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, ns_steps: int = 3):
        groups = list(params)
        for group in groups:
            group.setdefault("muon", False)
            if group["muon"]:
                group.setdefault("normalize", True)
                group.setdefault("ns_steps", ns_steps)
        super().__init__(groups, lr=lr, momentum=momentum, nesterov=nesterov)

    @torch.no_grad()
    def step(self, closure=None):  # torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        every = self.param_groups
        try:  # SGD's own step, over the SGD groups only
            self.param_groups = [g for g in every if not g["muon"]]
            super().step()
        finally:
            self.param_groups = every
        for group in every:
            if group["muon"]:
                self._muon_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        momentum, lr = group["momentum"], group["lr"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(p.grad)
            g = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
            if group["normalize"]:
                p.mul_(p.size(0) ** 0.5 / p.norm().clamp_min(1e-12))
            update = orthogonalize(g.reshape(len(g), -1), group["ns_steps"])  # (out, in*k*k)
            p.add_(update.view_as(p).to(p.dtype), alpha=-lr)
