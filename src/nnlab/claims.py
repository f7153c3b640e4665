"""A study's claims, measured: each published claim ("the dynamic learning rate helps") is a
list of variant pairs (with the idea, without it); its measured effect is the mean difference
of the main validation metric over those pairs, per seed, then mean ± standard deviation over
seeds. A claim holds when the difference favours the idea in every seed, does not hold when
its mean does not, and is mixed otherwise. Nothing is tuned until a claim holds: this module
only reads finished run folders.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Claim:
    text: str
    pairs: tuple[tuple[str, str], ...]  # (variant with the idea, variant without it)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "pairs": [list(p) for p in self.pairs]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Claim:
        return cls(str(raw["text"]), tuple((str(a), str(b)) for a, b in raw["pairs"]))


@dataclass(frozen=True)
class Effect:
    claim: Claim
    per_seed: dict[int, float]  # seed -> mean difference over the pairs (+ favours the idea)
    verdict: str  # holds | mixed | does not hold | not measured

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_seed.values())

    @property
    def spread(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.per_seed.values()) if len(self.per_seed) > 1 else 0.0

    def line(self, metric: str) -> str:
        if not self.per_seed:
            return f"{self.claim.text}: not measured (its variants did not all run)"
        n = len(self.per_seed)
        seeds = f"{n} seeds" if n > 1 else "1 seed, no spread"
        return (f"{self.claim.text}: {self.mean:+.4f} ± {self.spread:.4f} {metric} ({seeds}; "
                f"per seed {', '.join(f'{d:+.4f}' for d in self.per_seed.values())}): {self.verdict}")


def scores_by_variant(runs: list[tuple[str, int, float]]) -> dict[str, dict[int, float]]:
    """(variant, seed, main metric) triples -> variant -> seed -> metric."""
    table: dict[str, dict[int, float]] = {}
    for variant, seed, value in runs:
        table.setdefault(variant, {})[seed] = value
    return table


def measure(claim: Claim, scores: dict[str, dict[int, float]], higher_is_better: bool) -> Effect:
    """The claim's effect in every seed where all its pairs ran."""
    sign = 1.0 if higher_is_better else -1.0
    seeds = set.intersection(*(set(scores.get(name, {})) for pair in claim.pairs for name in pair))
    per_seed = {s: sign * statistics.fmean(scores[a][s] - scores[b][s] for a, b in claim.pairs)
                for s in sorted(seeds)}
    if not per_seed:
        verdict = "not measured"
    elif all(d > 0 for d in per_seed.values()):
        verdict = "holds"
    elif statistics.fmean(per_seed.values()) <= 0:
        verdict = "does not hold"
    else:
        verdict = "mixed: not in every seed"
    return Effect(claim, per_seed, verdict)


def seed_rows(scores: dict[str, dict[int, float]]) -> list[list[str]]:
    """Per variant: seeds, mean ± sd, min and max of the main metric."""
    rows = []
    for variant, by_seed in scores.items():
        values = list(by_seed.values())
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append([variant, str(len(values)), f"{statistics.fmean(values):.4f} ± {sd:.4f}",
                     f"{min(values):.4f}", f"{max(values):.4f}"])
    return rows


def lr_cuts(history: list[dict[str, Any]]) -> list[int]:
    """Epochs after which a plateau schedule cut the learning rate (the lr logged for an epoch
    is the one it trained with, so a cut shows as a lower lr in the next epoch)."""
    return [b["epoch"] - 1 for a, b in itertools.pairwise(history)
            if b.get("lr") is not None and a.get("lr") is not None and b["lr"] < a["lr"] * 0.999]
