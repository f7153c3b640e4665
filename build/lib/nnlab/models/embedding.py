"""Word embeddings in two tables: the training vocabulary's (trained) and pretrained-only words'.

Words that only the pretrained vectors know (added so unseen words at validation or
prediction time still get a meaningful vector) never occur in training, so training them
would only cost time: a dense 50,000 x 50 gradient and optimiser update per step made a
SICK epoch 3x slower. They live in a frozen buffer instead, saved with the weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class WordEmbedding(nn.Module):
    def __init__(self, trained: int, frozen: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(trained, dim))  # nn.Embedding's N(0, 1)
        with torch.no_grad():
            self.weight[0].zero_()  # padding
        self.register_buffer("frozen", torch.zeros(frozen, dim))
        self.dim = dim

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} trained + {self.frozen.shape[0]} frozen, dim={self.dim}"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (...) int64 -> (..., D)
        n = self.weight.shape[0]
        own = F.embedding(ids.clamp(max=n - 1), self.weight, padding_idx=0)
        if self.frozen.shape[0] == 0:
            return own
        pretrained = F.embedding((ids - n).clamp(min=0), self.frozen)
        return torch.where((ids < n).unsqueeze(-1), own, pretrained)

    @torch.no_grad()
    def load(self, matrix: np.ndarray) -> None:
        """Rows for the whole vocabulary, trained words first (as the vocabulary orders them)."""
        rows = torch.from_numpy(matrix)
        n = self.weight.shape[0]
        self.weight.copy_(rows[:n])
        self.frozen.copy_(rows[n:])
