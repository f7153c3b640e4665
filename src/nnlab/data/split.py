"""The one way nnlab carves validation data out of training data: a seeded hold-out of whole
examples (documents, sentence pairs, images), stratified by class where there are classes."""

from __future__ import annotations

import random

import torch

from nnlab.errors import NnlabError


def holdout(n: int, size: float, seed: int, where: str, unit: str,
            labels: torch.Tensor | None = None) -> tuple[list[int], list[int]]:
    """(kept, held) sorted indices: `size` < 1 is a fraction of `n`, else a count. With
    `labels` (N,), every class gives its share of the held-out examples."""
    held = round(size * n) if size < 1 else int(size)
    if not 0 < held < n:
        raise NnlabError(f"{where}: cannot hold out {held} of {n} {unit} for validation "
                         "(data.val_size)")
    if labels is not None:
        kept_idx, held_idx = stratified_split(labels, size, seed)
        return kept_idx.tolist(), held_idx.tolist()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[held:]), sorted(order[:held])


def stratified_split(labels: torch.Tensor, size: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministically split indices into (kept, held_out), keeping class proportions.

    `size` < 1 is a fraction, >= 1 a count. Each class gives its share of the held-out
    examples (largest remainders settle rounding), chosen by a seeded permutation.
    """
    n = labels.shape[0]
    total = round(size * n) if size < 1 else int(size)
    if not 0 < total < n:
        raise NnlabError(f"split of {size} leaves no examples on one side ({n} in all)")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * total / n  # (K,)
    share = exact.floor().long()
    remainder = total - int(share.sum())
    if remainder:
        share[torch.argsort(exact - share, descending=True)[:remainder]] += 1
    gen = torch.Generator().manual_seed(seed)
    held: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    for cls, k in zip(classes.tolist(), share.tolist(), strict=True):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        held.append(idx[:k])
        kept.append(idx[k:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values
