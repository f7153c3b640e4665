"""Knowledge distillation for the similarity task: a trained run (the teacher, e.g. the MiniLM
cross-encoder) scores extra pairs made of the training sentences (nnlab.data.pair_augment),
and the model being trained (the student, e.g. a Siamese LSTM) learns from those scores
beside the human ones (`--set data.teacher=RUN`, or a list of runs whose scores are averaged:
an ensemble teacher, as in Hinton et al. 2015).

The student keeps its own architecture: at prediction time it needs nothing of the teacher.
The teacher reads training sentences only, so the validation split stays unseen; its scores
are cached per teacher weights and pairs, so students of one teacher pay for them once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from nnlab.data.cache import kind_dir, touch
from nnlab.data.pair_augment import extra_pairs
from nnlab.data.pairs import PairData
from nnlab.errors import NnlabError
from nnlab.fileio import atomic_write
from nnlab.runs import BEST
from nnlab.tasks.loading import load_model, open_run

TIMES_TRAIN = 4  # extra pairs per training pair when data.teacher_pairs is 0


def teacher_pairs(train: PairData, teacher: str | list[str], count: int, device: str
                  ) -> tuple[PairData, dict[str, Any]]:
    """The extra pairs with the teacher's scores (the mean of several teachers' when
    `teacher` lists several runs), and what the run records about them."""
    runs = [teacher] if isinstance(teacher, str) else teacher
    if not runs or not all(isinstance(r, str) and r for r in runs):
        raise NnlabError(f"data.teacher: {teacher!r}: give a run folder or a list of them")
    pairs = extra_pairs(train, count or TIMES_TRAIN * len(train), seed=train.fingerprint())
    scores, about = [], []
    for run in runs:
        run_scores, run_about = _scores(run, train, pairs, device)
        scores.append(run_scores)
        about.append(run_about)
    mean = torch.stack(scores).mean(0)  # (N,)
    pairs.scores = mean.tolist()
    return pairs, {"model": ", ".join(a["model"] for a in about), "runs": about,
                   "pairs": len(pairs), "mean_score": round(float(mean.mean()), 4)}


def _scores(run: str, train: PairData, pairs: PairData, device: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """One teacher run's scores (N,) of the pairs, read from the cache or computed."""
    try:
        folder, cfg, task = open_run(run, device)
    except NnlabError as e:
        raise NnlabError(f"data.teacher: {e}") from None
    if task.name != "similarity":
        raise NnlabError(f"data.teacher: {run} is a {task.name} run, not a similarity run")
    if list(task.public_info()["score_range"]) != list(train.score_range):
        raise NnlabError(f"data.teacher: {run} scores in {task.public_info()['score_range']}, "
                         f"the training data in {list(train.score_range)}")
    weights = hashlib.sha256((folder.path / BEST).read_bytes()).hexdigest()[:16] \
        if (folder.path / BEST).is_file() else "none"
    key = hashlib.sha256(json.dumps([weights, pairs.texts]).encode()).hexdigest()[:24]
    file = kind_dir("teacher") / f"{key}.pt"
    scores = _read(file, len(pairs))
    if scores is None:
        model = load_model(folder, task)  # a run without weights: one line from load_best
        scores = task.score_texts(model, pairs.texts)  # (N,)
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, lambda tmp: torch.save(scores, tmp))
    return scores, {"run": str(folder.path), "model": cfg.model.name, "weights": weights}


def _read(file: Path, count: int) -> torch.Tensor | None:
    """Cached scores, if whole (a plain tensor: weights_only loading runs no code)."""
    if not file.is_file():
        return None
    try:
        scores = torch.load(file, weights_only=True)
    except Exception:  # a damaged cache entry is recomputed
        return None
    if not (isinstance(scores, torch.Tensor) and scores.shape == (count,)):
        return None
    touch(file)
    return scores
