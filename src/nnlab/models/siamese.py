"""Siamese sentence-pair regressors: one shared RNN encodes both sentences, a head scores them.

The second report's networks (Siamese RNN and LSTM, 128 units, a 3-layer LSTM with dropout,
one-hot or embedding inputs) and MaLSTM (Mueller & Thyagarajan 2016: a 50-unit LSTM, score
exp(-||h_a - h_b||_1)) are this one module with different options. Both sentences go
through the encoder in one packed batch, so weights are shared by construction.

Heads map into the data's score range [lo, hi], read from the data set:
- `malstm`: lo + (hi - lo) * exp(-L1 distance of the two encodings);
- `cosine`: lo + (hi - lo) * (1 + cos) / 2;
- `mlp`:    lo + (hi - lo) * sigmoid(MLP([|a - b|, a * b])) (InferSent-style features);
- `dist`:   Tai et al. 2015: the same MLP gives a distribution over the integer scores of the
            range (lo, lo+1, ..., hi), the prediction is its mean, and training minimises the
            KL divergence to the gold score spread over its two nearest integers.
All but `dist` train on the mean squared error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nnlab.errors import NnlabError
from nnlab.models.embedding import WordEmbedding
from nnlab.models.layers import fast_padded, final_states, rnn_layers, rnn_padded, upcast
from nnlab.models.registry import register

HEADS = ("malstm", "cosine", "mlp", "dist")


class SentenceEncoder(nn.Module):
    """Words -> one vector per sentence: the last state (each direction's), or max/mean pooling."""

    def __init__(self, vocab_size: int, inputs: str, word_dim: int, cell: str,
                 hidden_sizes: tuple[int, ...], dropout: tuple[float, ...] | float,
                 bidirectional: bool, pooling: str, frozen_words: int = 0):
        super().__init__()
        if inputs not in ("embedding", "onehot"):
            raise NnlabError(f"model.inputs: unknown {inputs!r} (embedding, onehot)")
        if pooling not in ("last", "max", "mean"):
            raise NnlabError(f"model.pooling: unknown {pooling!r} (last, max, mean)")
        drops = tuple(dropout) if isinstance(dropout, tuple | list) else (float(dropout),) * len(hidden_sizes)
        if len(drops) != len(hidden_sizes):
            raise NnlabError(f"model.dropout: {len(drops)} values for {len(hidden_sizes)} layers")
        self.inputs, self.vocab_size, self.pooling = inputs, vocab_size, pooling
        self.words = (WordEmbedding(vocab_size - frozen_words, frozen_words, word_dim)
                      if inputs == "embedding" else None)
        dim = word_dim if inputs == "embedding" else vocab_size
        self.layers, self.out_dim = rnn_layers(cell, dim, hidden_sizes, bidirectional)
        self.drops = nn.ModuleList(nn.Dropout(p) for p in drops)  # on each layer's input

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # ids: (B, T) int64, lengths: (B,) on the CPU -> (B, D)
        out = self._padded(ids, lengths) if fast_padded(ids) else self._packed(ids, lengths)  # (B, T, D)
        if self.pooling == "last":  # each direction's final state (backward: at token 0)
            return final_states(out, lengths, self.layers[-1].bidirectional)
        mask = (torch.arange(out.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).to(out.device)
        if self.pooling == "max":
            return out.masked_fill(~mask.unsqueeze(2), float("-inf")).amax(dim=1)
        return (out * mask.unsqueeze(2)).sum(1) / lengths.to(out.device).unsqueeze(1)

    def _padded(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The CPU form: padded batches (see `rnn_padded`); one-hot words are looked up.

        A one-hot row times the first layer's input weights is one column of them, so each
        direction's input projection is a lookup, then read through an identity. On SICK's
        1,877 words this and the padded form make a training step 1.6-2.6x faster than dense
        one-hot vectors in packed sequences (benchmarks/rnn_speed.py). Dropout on a one-hot
        vector only zeroes or rescales its single 1, so it acts on whole words here."""
        stack = list(zip(self.layers, self.drops, strict=True))
        if self.words is not None:
            h = self.words(ids)  # (B, T, E)
        else:
            (first, drop), stack = stack[0], stack[1:]
            w_ih = [first.weight_ih_l0]  # each (G, V)
            if first.bidirectional:
                w_ih.append(first.weight_ih_l0_reverse)
            dirs = len(w_ih)
            x = torch.cat([F.embedding(ids, w.t()) for w in w_ih], dim=2)  # (B, T, dirs*G)
            x = x * drop(x.new_ones(*ids.shape, 1))  # word dropout, (B, T, 1)
            gates = w_ih[0].shape[0]
            eye = torch.eye(dirs * gates, dtype=x.dtype, device=x.device)  # direction d reads block d
            h = rnn_padded(first, x, lengths, [eye[d * gates:(d + 1) * gates] for d in range(dirs)])
        for layer, drop in stack:
            h = rnn_padded(layer, drop(h), lengths)  # dropout on each layer's input, as Keras'
        return h

    def _packed(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The GPU and ONNX form: packed sequences, one-hot words as real one-hot vectors."""
        if self.words is not None:
            x = self.words(ids)  # (B, T, E)
        else:  # the report's one-hot input: the first layer's input weights act as embeddings
            x = F.one_hot(ids, self.vocab_size).to(self.layers[0].weight_ih_l0.dtype)  # (B, T, V)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        for layer, drop in zip(self.layers, self.drops, strict=True):
            # dropout on each layer's input, as Keras' LSTM(dropout=...) of the report
            packed, _ = layer(packed._replace(data=drop(packed.data)))
        return pad_packed_sequence(packed, batch_first=True, total_length=ids.shape[1])[0]


def target_distribution(target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each score spread over its two nearest levels (Tai et al. 2015): with levels 1..5,
    3.4 -> 0.6 at 3 and 0.4 at 4. target (B,), levels (K,) evenly spaced -> (B, K)."""
    step = levels[1] - levels[0]
    pos = ((target - levels[0]) / step).clamp(0, len(levels) - 1)  # (B,) fractional index
    low = pos.floor().long().clamp(max=len(levels) - 1)
    high = (low + 1).clamp(max=len(levels) - 1)
    frac = (pos - low).unsqueeze(1)  # (B, 1)
    dist = torch.zeros(target.shape[0], len(levels), device=target.device, dtype=target.dtype)
    dist.scatter_add_(1, high.unsqueeze(1), frac)
    dist.scatter_add_(1, low.unsqueeze(1), 1 - frac)
    return dist


class PairHead(nn.Module):
    """The score heads (module docstring), shared by every pair model: `_init_head` sets them
    up for encodings of width `dim`, `_scores` maps a pair's two encodings to scores (B,) and,
    for `dist`, the logits; `_features_scores` maps one joint feature vector per pair (a
    cross-encoder's) through the `mlp` or `dist` head; `_loss` is the training loss."""

    def _init_head(self, dim: int, score_range: tuple[float, float], head: str, mlp_hidden: int,
                   feature_dim: int | None = None) -> None:
        if head not in HEADS:
            raise NnlabError(f"model.head: unknown {head!r} ({', '.join(HEADS)})")
        self.head = head
        self.register_buffer("score_range", torch.tensor([float(score_range[0]), float(score_range[1])]))
        self.mlp = None
        lo, hi = score_range
        # the integer levels of `dist` (SICK 1..5, STS 0..5); 11 even steps for other ranges
        width = hi - lo
        integral = width >= 2 and float(width).is_integer()
        levels = torch.linspace(lo, hi, int(width) + 1 if integral else 11)
        self.register_buffer("levels", levels.float())
        if head in ("mlp", "dist"):
            out = 1 if head == "mlp" else len(levels)
            self.mlp = nn.Sequential(nn.Linear(feature_dim or 2 * dim, mlp_hidden), nn.Tanh(),
                                     nn.Linear(mlp_hidden, out))

    def _scores(self, ha: torch.Tensor, hb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.head in ("mlp", "dist"):
            return self._features_scores(torch.cat([(ha - hb).abs(), ha * hb], dim=1))
        lo, hi = self.score_range[0], self.score_range[1]
        if self.head == "malstm":
            unit = torch.exp(-(ha - hb).abs().sum(dim=1))  # (B,) in (0, 1]
        else:
            unit = (1 + F.cosine_similarity(ha, hb, dim=1)) / 2
        return lo + (hi - lo) * unit, None

    def _features_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # x: (B, F) -> scores (B,) and, for `dist`, logits (B, K)
        lo, hi = self.score_range[0], self.score_range[1]
        if self.head == "dist":
            logits = self.mlp(x)  # (B, K)
            return (logits.float().softmax(dim=1) * self.levels).sum(dim=1), logits
        if self.head != "mlp":
            raise NnlabError(f"model.head: {self.head!r} compares two encodings; this model has one "
                             "per pair (use mlp or dist)")
        return lo + (hi - lo) * torch.sigmoid(self.mlp(x)).squeeze(1), None

    def _loss(self, scores: torch.Tensor, logits: torch.Tensor | None, target: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss (mean over the batch) and the predicted scores (B,)."""
        if logits is None:
            wide = upcast(scores)
            return F.mse_loss(wide, target.to(wide.dtype)), scores
        dist = target_distribution(target.to(self.levels.dtype), self.levels)  # (B, K)
        log_p = F.log_softmax(upcast(logits), dim=1)
        return F.kl_div(log_p, dist, reduction="batchmean"), scores


def pad_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Ta) and (B, Tb) padded ids -> both (B, max(Ta, Tb)), zero-padded.

    A traced graph (ONNX export) would keep the max of the example's sizes as a constant and
    crop longer inputs, so there both are padded to Ta + Tb (padding is ignored by lengths)."""
    if torch.jit.is_tracing():
        return F.pad(a, (0, b.shape[1])), F.pad(b, (0, a.shape[1]))
    t = max(a.shape[1], b.shape[1])
    return F.pad(a, (0, t - a.shape[1])), F.pad(b, (0, t - b.shape[1]))


class SiamesePair(PairHead):
    """A pair model whose two sentences go through one encoder (`embed`: padded ids and
    lengths -> one vector per sentence) as one batch, so weights are shared by construction."""

    def embed(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # (N, T), (N,) on the CPU -> (N, D)

    def forward(self, a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor
                ) -> torch.Tensor:
        # a: (B, Ta), b: (B, Tb) ids; lengths (B,) on the CPU -> scores (B,) in the range
        return self._scores(*self._encode(a, a_len, b, b_len))[0]

    def loss(self, a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor,
             target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss (mean over the batch) and the predicted scores (B,)."""
        return self._loss(*self._scores(*self._encode(a, a_len, b, b_len)), target)

    def _encode(self, a, a_len, b, b_len) -> tuple[torch.Tensor, torch.Tensor]:
        n = a.shape[0]
        h = self.embed(torch.cat(pad_pair(a, b)), torch.cat([a_len, b_len]))  # (2B, D): one pass
        return h[:n], h[n:]


class SiameseRegressor(SiamesePair):
    def __init__(self, vocab_size: int, score_range: tuple[float, float], inputs: str = "embedding",
                 word_dim: int = 50, cell: str = "lstm", hidden_sizes: tuple[int, ...] = (128,),
                 dropout: tuple[float, ...] | float = 0.0, bidirectional: bool = False,
                 pooling: str = "last", head: str = "malstm", mlp_hidden: int = 128,
                 frozen_words: int = 0):
        super().__init__()
        if head not in HEADS:
            raise NnlabError(f"model.head: unknown {head!r} ({', '.join(HEADS)})")
        self.encoder = SentenceEncoder(vocab_size, inputs, word_dim, cell, hidden_sizes, dropout,
                                       bidirectional, pooling, frozen_words)
        self._init_head(self.encoder.out_dim, score_range, head, mlp_hidden)

    @property
    def words(self) -> WordEmbedding | None:
        return self.encoder.words

    def embed(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(ids, lengths)  # (N, D)


# -- the registry -------------------------------------------------------------------------------
# the second report: SGD from lr 0.1, reduced when validation stops improving ("dynamic lr")
REPORT_RECIPE = {"optim.name": "sgd", "optim.lr": 0.1, "optim.momentum": 0.0,
                 "schedule.name": "plateau", "schedule.patience": 2, "schedule.factor": 0.5,
                 "data.batch_size": 32, "data.eval_batch_size": 256, "train.epochs": 20,
                 "train.grad_clip": 5.0}
# MaLSTM's: Adadelta, gradient clipping, batch 64 (the paper trains far longer on augmented data)
MALSTM_RECIPE = {"optim.name": "adadelta", "optim.lr": 1.0, "optim.alpha": 0.95, "optim.eps": 1e-6,
                 "data.batch_size": 64, "data.eval_batch_size": 256, "train.epochs": 30,
                 "train.grad_clip": 1.0}
# nnlab's best configuration on SICK trial (benchmarks/similarity_variants.py): Adam, lookahead,
# the epoch picked on trial; of the heads (15 epochs each), Tai et al.'s distribution did best
# on trial, ahead of exp(-L1), an MLP and cosine; it overfits after a few epochs, so the cosine
# decay runs over 6, as good in a fifth of the time (the figures: `similarity_sick.json` on the
# docs' Results page)
BEST_RECIPE = {"optim.name": "adam", "optim.lr": 0.002, "schedule.name": "cosine",
               "data.batch_size": 32, "data.eval_batch_size": 256, "train.epochs": 6,
               "train.grad_clip": 5.0, "train.lookahead": True}


register("rnn", "similarity", "Siamese RNN (tanh), 128 units, exp(-L1) head (second report)",
         REPORT_RECIPE, cell="rnn", hidden_sizes=(128,), dropout=(0.0,), head="malstm")(SiameseRegressor)
register("stacked-lstm", "similarity",
         "Siamese 3-layer LSTM, 128 units, dropout 0.1/0.2/0.2, exp(-L1) head (second report)",
         REPORT_RECIPE, cell="lstm", hidden_sizes=(128, 128, 128), dropout=(0.1, 0.2, 0.2),
         head="malstm")(SiameseRegressor)
register("malstm", "similarity", "MaLSTM: Siamese LSTM, 50 units, exp(-L1) (Mueller & Thyagarajan 2016)",
         MALSTM_RECIPE, cell="lstm", hidden_sizes=(50,), dropout=(0.0,), head="malstm")(SiameseRegressor)
register("lstm", "similarity",
         "Siamese BiLSTM, 128 units per direction, max pooling, Tai et al.'s distribution head "
         "(chosen on SICK trial)",
         BEST_RECIPE, cell="lstm", hidden_sizes=(128,), dropout=(0.0,), head="dist", pooling="max",
         bidirectional=True)(SiameseRegressor)
