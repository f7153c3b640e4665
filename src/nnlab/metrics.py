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


# -- sequence labelling ---------------------------------------------------------------------
def _prf(correct: int, predicted: int, gold: int) -> dict[str, float | int]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold,
            "predicted": predicted, "correct": correct}


def span_scores(gold: list[list[tuple[int, int, str]]], pred: list[list[tuple[int, int, str]]]
                ) -> dict:
    """Exact-match span precision, recall and F1 (micro over all spans, as conlleval and
    seqeval report them), and the same per span type. A span counts only when its start,
    end and type all match."""
    totals = {"correct": 0, "predicted": 0, "gold": 0}
    per_type: dict[str, dict[str, int]] = {}
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(g), set(p)
        for spans, key in ((gs, "gold"), (ps, "predicted"), (gs & ps, "correct")):
            totals[key] += len(spans)
            for s in spans:
                per_type.setdefault(s[2], {"correct": 0, "predicted": 0, "gold": 0})[key] += 1
    micro = _prf(totals["correct"], totals["predicted"], totals["gold"])
    return {
        "span_precision": micro["precision"], "span_recall": micro["recall"],
        "span_f1": micro["f1"], "spans_gold": totals["gold"], "spans_predicted": totals["predicted"],
        "per_type": {t: _prf(c["correct"], c["predicted"], c["gold"])
                     for t, c in sorted(per_type.items())},
    }


def token_scores(gold_in_span: torch.Tensor, pred_in_span: torch.Tensor) -> dict[str, float]:
    """Token-level keyword F1, the first report's metric: each token is a keyword token or
    not (inside any span); types and span boundaries are ignored."""
    # gold_in_span, pred_in_span: (tokens,) bool
    correct = int((gold_in_span & pred_in_span).sum())
    m = _prf(correct, int(pred_in_span.sum()), int(gold_in_span.sum()))
    return {"token_precision": m["precision"], "token_recall": m["recall"], "token_f1": m["f1"]}


def correlations(pred: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """MSE, Pearson r and Spearman rho of predicted against gold scores (N,)."""
    from scipy import stats

    p, g = pred.double().numpy(), gold.double().numpy()
    constant = p.std() == 0  # a constant prediction has no correlation: report 0, not NaN
    return {"mse": float(((p - g) ** 2).mean()),
            "pearson": 0.0 if constant else float(stats.pearsonr(p, g)[0]),
            "spearman": 0.0 if constant else float(stats.spearmanr(p, g)[0])}
