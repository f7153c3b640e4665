"""Figures as PNG files: training curves and confusion matrices (matplotlib, no display).

matplotlib is imported on the first figure, not with nnlab: pyplot costs about 0.2 s, a
seventh of every command's start, and most commands (predict, evaluate, serve) draw nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.fileio import atomic_write


@functools.cache
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # labels hold user strings (class and variant names): "$\foo$" is text, not mathtext
    matplotlib.rcParams["text.parse_math"] = False
    return plt


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)


def training_curves(history: list[dict[str, Any]], metric: str, path: Path,
                    title: str = "") -> None:
    """Loss and the main metric per epoch, train vs validation, as the reports plot them."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], metric, metric)):
        for split, style in (("train", "-"), ("val", "--")):
            values = [r.get(f"{split}_{key}") for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker="o", markersize=3,
                        label="validation" if split == "val" else "train")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (true class per row) with counts in each cell."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = max(4.0, 0.5 * k + 2)
    fig, ax = _pyplot().subplots(figsize=(size, size * 0.9))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if title:
        ax.set_title(title)
    _save(fig, path)


def scatter(predicted: list[float], gold: list[float], path: Path, title: str = "") -> None:
    """Predicted against gold scores, with the diagonal a perfect model would sit on."""
    fig, ax = _pyplot().subplots(figsize=(4.8, 4.5))
    ax.scatter(gold, predicted, s=6, alpha=0.4)
    lo, hi = min(min(gold), min(predicted)), max(max(gold), max(predicted))
    ax.plot([lo, hi], [lo, hi], "--", color="grey", linewidth=1)
    ax.set_xlabel("gold score")
    ax.set_ylabel("predicted score")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def search_history(trials: list[tuple[int, float | None, str]], path: Path, label: str,
                   higher_is_better: bool) -> None:
    """A search's trials in order: each finished trial's value, pruned ones marked, and the
    best so far as a step line (Optuna's optimisation-history plot, in matplotlib)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _pyplot().subplots(figsize=(7, 3.8))
    done = [(n, v) for n, v, state in trials if v is not None and state == "COMPLETE"]
    pruned = [n for n, _, state in trials if state == "PRUNED"]
    if done:
        ax.plot([n for n, _ in done], [v for _, v in done], "o", label="finished trial")
        best, line = None, []
        for n, v in done:
            best = v if best is None or (v > best if higher_is_better else v < best) else best
            line.append((n, best))
        ax.step([n for n, _ in line], [b for _, b in line], where="post", color="C1", label="best so far")
    if pruned:
        for n in pruned:
            ax.axvline(n, color="grey", alpha=0.25, linewidth=3)
        ax.plot([], [], color="grey", alpha=0.4, linewidth=3, label="pruned trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
