"""A seeded hold-out of whole examples (documents, sentence pairs) for validation."""

from __future__ import annotations

import random

from nnlab.errors import NnlabError


def holdout(n: int, size: float, seed: int, where: str, unit: str) -> tuple[list[int], list[int]]:
    """(kept, held) sorted indices: `size` < 1 is a fraction of `n`, else a count."""
    held = round(size * n) if size < 1 else int(size)
    if not 0 < held < n:
        raise NnlabError(f"{where}: cannot hold out {held} of {n} {unit} for validation "
                         "(data.val_size)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[held:]), sorted(order[:held])
