"""Ensemble selection: which runs of a library to combine, and with what weights, chosen on
the validation split (`nnlab ensemble RUN ... --select STEPS`).

The method is Caruana et al.'s forward selection with replacement ("Ensemble selection from
libraries of models", ICML 2004): start from the best run alone, then add, one step at a
time, the run whose addition gives the best validation figure, the same run possibly again;
a run's weight is the number of times it was added. Of the `steps` ensembles seen on the way,
the best one is kept. Adding with replacement is what makes it a weight search: a run added
three times of five weighs 0.6, and a weak run that only helps at a small weight gets one.

Choosing on validation flatters the validation figure of what was chosen. So the selection
is also run twice more, on each half of the validation examples, and judged on the other
half: the mean of those two held-out figures (`crossfit`) estimates what the procedure gives
on unseen data, beside the same figure for every run combined equally and for the run that
was best on the other half. Every figure here, a run alone included, is of outputs combined
by the ensemble's rule (a tagger alone under `mean-marginals` is decoded from its marginals).
No member's outputs are computed twice: those on the whole split are cut into the halves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nnlab.errors import NnlabError

SPLIT_SEED = 0  # the halves of the validation split for the held-out estimate
MAX_STEPS = 200
MIN_EXAMPLES = 10  # validation examples below which halves of 5 say nothing


def _ordered(higher_is_better: bool) -> Callable[[float], float]:
    """A sort key: better figures larger; an undefined figure (a constant prediction's
    correlation) worst of all."""
    sign = 1.0 if higher_is_better else -1.0
    return lambda v: -math.inf if math.isnan(v) else sign * v


@dataclass
class Selection:
    """Weights (selection counts) over the candidates, and the validation figure after each
    step (`curve`: the first is the best run alone)."""

    counts: list[int]
    curve: list[float]
    picks: list[int] = field(default_factory=list)  # the candidate added at each step

    @property
    def chosen(self) -> list[int]:
        return [i for i, c in enumerate(self.counts) if c > 0]


def check_examples(n: int, where: str) -> None:
    if n < MIN_EXAMPLES:
        raise NnlabError(f"--select: {where} holds {n} validation examples; selection judges "
                         f"halves of them and needs {MIN_EXAMPLES} or more")


def check_steps(steps: int, candidates: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise NnlabError(f"--select {steps}: the number of selection steps, 1 to {MAX_STEPS}")
    if candidates < 2:
        raise NnlabError("--select: give at least two runs to choose from")


def greedy(candidates: int, score: Callable[[list[int]], float], steps: int,
           higher_is_better: bool) -> Selection:
    """Forward selection with replacement over `candidates` runs; `score(counts)` is the
    validation figure of the ensemble weighted by `counts`. The best of the ensembles seen
    (earliest on ties: fewer steps, fewer members) is returned."""
    better = _ordered(higher_is_better)

    def one_hot(i: int) -> list[int]:
        return [int(j == i) for j in range(candidates)]

    singles = [score(one_hot(i)) for i in range(candidates)]
    first = max(range(candidates), key=lambda i: better(singles[i]))  # the first best on ties
    counts, curve, picks = one_hot(first), [singles[first]], [first]
    best = (curve[0], list(counts), 1)
    for _ in range(steps - 1):
        trials = [score([c + (j == i) for j, c in enumerate(counts)]) for i in range(candidates)]
        pick = max(range(candidates), key=lambda i: better(trials[i]))
        counts[pick] += 1
        curve.append(trials[pick])
        picks.append(pick)
        if better(trials[pick]) > better(best[0]):
            best = (trials[pick], list(counts), len(curve))
    return Selection(best[1], curve[: best[2]], picks[: best[2]])


def halves(n: int) -> tuple[list[int], list[int]]:
    """The validation examples' indices in two halves, by a fixed shuffle."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    return sorted(order[: n // 2]), sorted(order[n // 2 :])


def crossfit(n: int, judge_part: Callable[[list[int], list[int]], float], candidates: int,
             select_on: Callable[[list[int]], Selection], higher_is_better: bool
             ) -> dict[str, Any]:
    """Held-out figures of the procedure on the two halves of `n` validation examples:
    `judge_part(indices, counts)` judges an ensemble on those examples; `select_on(indices)`
    runs the selection on them. Each figure is the mean over the two halves of an ensemble
    chosen on the other half."""
    better = _ordered(higher_is_better)
    a, b = halves(n)
    figures: dict[str, list[float]] = {"selected": [], "all_equal": [], "best_run": []}
    for chosen_on, judged_on in ((a, b), (b, a)):
        selection = select_on(chosen_on)
        figures["selected"].append(judge_part(judged_on, selection.counts))
        figures["all_equal"].append(judge_part(judged_on, [1] * candidates))
        singles = [judge_part(chosen_on, [int(j == i) for j in range(candidates)])
                   for i in range(candidates)]
        best = max(range(candidates), key=lambda i: better(singles[i]))
        figures["best_run"].append(judge_part(judged_on, [int(j == best) for j in range(candidates)]))
    return {k: sum(v) / len(v) for k, v in figures.items()} | {"halves": [len(a), len(b)]}


def weights_of(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts]
