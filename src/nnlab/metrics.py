"""Classification metrics computed from integer labels (no framework magic, no sklearn)."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[i, j] = number of examples of true class i predicted as class j."""
    # pred, target: (N,) int64
    flat = target.to(torch.int64) * num_classes + pred.to(torch.int64)  # (N,)
    counts = torch.bincount(flat, minlength=num_classes * num_classes)  # (K*K,)
    return counts.reshape(num_classes, num_classes)


def classification_report(confusion: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, per-class accuracy (recall), precision and F1 from a confusion matrix."""
    confusion = confusion.to(torch.float64)
    total = confusion.sum().item()
    correct = confusion.diagonal()  # (K,)
    support = confusion.sum(dim=1)  # (K,) true examples per class
    predicted = confusion.sum(dim=0)  # (K,) predictions per class
    recall = torch.where(support > 0, correct / support.clamp(min=1), torch.nan)
    precision = torch.where(predicted > 0, correct / predicted.clamp(min=1), torch.nan)
    f1 = torch.where(
        (precision + recall) > 0, 2 * precision * recall / (precision + recall), 0.0
    )
    per_class = {}
    for i, name in enumerate(classes):
        per_class[name] = {
            "accuracy": _num(recall[i]),
            "precision": _num(precision[i]),
            "f1": _num(f1[i]),
            "support": int(support[i].item()),
        }
    return {
        "accuracy": correct.sum().item() / total if total else float("nan"),
        "n": int(total),
        "per_class": per_class,
        "confusion": confusion.to(torch.int64).tolist(),
        "classes": list(classes),
    }


def _num(x: torch.Tensor) -> float | None:
    value = x.item()
    return None if value != value else value  # NaN (no examples) -> null in JSON
