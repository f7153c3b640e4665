"""Sentence-pair regressors on a fine-tuned all-MiniLM-L6-v2 (nnlab.models.minilm).

- `minilm` (bi-encoder): both sentences through the one encoder, each mean-pooled over its
  word pieces (how all-MiniLM-L6-v2 was trained), then one of the Siamese heads (`cosine`,
  `mlp`, `dist` by default; nnlab.models.siamese). Sentences are encoded independently, so
  a sentence's vector can be cached and compared with many others.
- `minilm-cross` (cross-encoder): the pair as one input, [CLS] a [SEP] b [SEP] with segment
  ids, so attention runs across the sentences; the [CLS] state goes through the `mlp` or
  `dist` head. Usually the more accurate of the two, at one encoder pass per pair.

Both take the task's usual padded ids and lengths, here word pieces of [CLS] s [SEP] per
sentence, and train in nnlab's own loop; `init_pretrained` loads the package's weights
into a new run's model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import nnlab.models.minilm as minilm
from nnlab.models.layers import upcast
from nnlab.models.registry import register
from nnlab.models.siamese import PairHead, SiamesePair, pad_pair


class PretrainedEncoder:
    """What both MiniLM pair models share: no word-vector table (so the task's GloVe loading
    skips them) and the package's weights loaded into a new run's encoder."""

    words = None
    encoder: torch.nn.Module

    def init_pretrained(self) -> None:
        minilm.load_weights(self.encoder)


class MiniLMBiEncoder(PretrainedEncoder, SiamesePair):
    def __init__(self, score_range: tuple[float, float], head: str = "dist", mlp_hidden: int = 256,
                 pooling: str = "mean"):
        super().__init__()
        self.encoder = minilm.bert(pretrained=False)
        self.pooling = minilm.check_pooling(pooling)
        self._init_head(self.encoder.config.hidden_size, score_range, head, mlp_hidden)

    def embed(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) piece ids, (B,) lengths on the CPU -> (B, H) sentence vectors."""
        states = minilm.encode(self.encoder, ids, lengths)  # (B, T, H), zero past each length
        return minilm.pool(states, lengths, self.pooling)


def joint_pieces(a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[CLS] a [SEP] + b [SEP] (b's own [CLS] dropped) as one padded batch.

    a: (B, Ta), b: (B, Tb) piece ids with [CLS]/[SEP]; lengths (B,) on the CPU.
    Returns ids (B, T), segment ids (B, T) (1 on b's pieces) and lengths (B,) on the CPU."""
    lengths = a_len + b_len - 1  # (B,)
    dev = a.device
    # the longest pair's length; a traced graph (ONNX export) cannot depend on the data, so
    # there the padded shapes bound it (the positions past each length are padding)
    width = a.shape[1] + b.shape[1] - 1 if torch.jit.is_tracing() else int(lengths.max())
    j = torch.arange(width, device=dev).unsqueeze(0)  # (1, T)
    la, lb = a_len.to(dev).unsqueeze(1), lengths.to(dev).unsqueeze(1)  # (B, 1)
    from_a = j < la  # (B, T)
    ids_a = a.gather(1, j.clamp(max=a.shape[1] - 1).expand(a.shape[0], -1))
    ids_b = b.gather(1, (j - la + 1).clamp(0, b.shape[1] - 1))
    valid = j < lb
    ids = torch.where(from_a, ids_a, ids_b) * valid
    types = (~from_a & valid).long()
    return ids, types, lengths


def swap_pairs(a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor,
               swap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs with a and b exchanged where `swap` (B,) bool (on the CPU) is set."""
    a, b = pad_pair(a, b)  # (B, T) each
    s = swap.to(a.device).unsqueeze(1)
    return (torch.where(s, b, a), torch.where(swap, b_len, a_len),
            torch.where(s, a, b), torch.where(swap, a_len, b_len))


class MiniLMCrossEncoder(PretrainedEncoder, PairHead):
    """`symmetric`: similarity does not depend on the order of the sentences, but a
    cross-encoder's input does; training then reads each pair in a random order (an
    augmentation that doubles the distinct inputs), and a prediction is the mean of both.

    `entailment_classes` (supplied by the task under data.entailment_weight): a linear head
    on the same pair feature also learns SICK's entailment judgments, its cross-entropy
    weighted by `entailment_weight` beside the score's loss. Entailment has a direction, so
    a pair read in swapped order does not count for it."""

    def __init__(self, score_range: tuple[float, float], head: str = "mlp", mlp_hidden: int = 256,
                 symmetric: bool = True, pooling: str = "cls", entailment_classes: int = 0,
                 entailment_weight: float = 0.0):
        super().__init__()
        self.encoder = minilm.bert(pretrained=False)
        width = self.encoder.config.hidden_size
        self.symmetric = symmetric
        self.pooling = minilm.check_pooling(pooling)
        self._init_head(width, score_range, head, mlp_hidden, feature_dim=width)
        self.entailment = nn.Linear(width, entailment_classes) if entailment_classes else None
        self.entailment_weight = entailment_weight

    def forward(self, a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor
                ) -> torch.Tensor:
        scores = self._features_scores(self._pool(a, a_len, b, b_len))[0]  # (B,)
        if self.symmetric and not self.training:
            swapped = swap_pairs(a, a_len, b, b_len, torch.ones(a.shape[0], dtype=torch.bool))
            scores = (scores + self._features_scores(self._pool(*swapped))[0]) / 2
        return scores

    def loss(self, a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor,
             target: torch.Tensor, labels: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """labels: (B,) entailment judgments (-100: none), read when the model has the head."""
        swap = torch.zeros(a.shape[0], dtype=torch.bool)
        if self.symmetric and self.training:  # each pair in a random order (model-side randomness)
            swap = torch.rand(a.shape[0]) < 0.5
            a, a_len, b, b_len = swap_pairs(a, a_len, b, b_len, swap)
        features = self._pool(a, a_len, b, b_len)  # (B, H)
        loss, scores = self._loss(*self._features_scores(features), target)
        if self.entailment is not None and labels is not None:
            labels = labels.masked_fill(swap.to(labels.device), -100)  # (B,)
            ce = F.cross_entropy(upcast(self.entailment(features)), labels, ignore_index=-100,
                                 reduction="sum")
            loss = loss + self.entailment_weight * ce / (labels != -100).sum().clamp(min=1)
        return loss, scores

    def _pool(self, a, a_len, b, b_len) -> torch.Tensor:
        """The pair's feature (B, H), pooled over the joint input."""
        ids, types, lengths = joint_pieces(a, a_len, b, b_len)
        states = minilm.encode(self.encoder, ids, lengths, types)  # (B, T, H), zero past each length
        return minilm.pool(states, lengths, self.pooling)


# Fine-tuning as sentence-transformers does on STS (AdamW, a short warm-up, linear decay,
# batch 16, weight decay 0.01 on the weights, not biases and norms) for 5 epochs, at lr 5e-5
# for the bi-encoder and 8e-5 for the cross-encoder: on SICK trial, over 3 seeds, 8e-5 beat
# 5e-5 for the cross-encoder, and both beat sentence-transformers' 2e-5 for 4 epochs reading
# each pair in one order (the figures: `similarity_minilm.json` on the docs' Results page)
RECIPE = {"optim.name": "adamw", "optim.lr": 5e-5, "optim.weight_decay": 0.01,
          "schedule.name": "warmup-linear", "schedule.warmup_epochs": 0.4,
          "data.batch_size": 16, "data.eval_batch_size": 128, "train.epochs": 5,
          "train.grad_clip": 1.0}
CROSS_RECIPE = {**RECIPE, "optim.lr": 8e-5}

register("minilm", "similarity",
         f"{minilm.NAME} bi-encoder, fine-tuned: mean-pooled sentence vectors, Tai et al.'s "
         "distribution head",
         RECIPE, reads="wordpieces")(MiniLMBiEncoder)
register("minilm-cross", "similarity",
         f"{minilm.NAME} cross-encoder, fine-tuned: both sentences in one input, [CLS] -> MLP head",
         CROSS_RECIPE, reads="wordpieces")(MiniLMCrossEncoder)
