"""Sequence taggers: embeddings -> bidirectional RNN / LSTM / GRU stack -> softmax or CRF.

The first report's variants (32 units per direction, a 32/16/16 deep BiLSTM, GloVe,
BiLSTM + CRF) and the character-feature taggers of Ma & Hovy 2016 (char-CNN) and Lample
et al. 2016 (char-LSTM) are all this one module with different options.

Sequences have their own lengths: the RNNs run on packed sequences, so the backward
direction starts at each sequence's real last token, and padding never reaches a score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from nnlab.data.tags import allowed_transitions
from nnlab.errors import NnlabError
from nnlab.models.crf import CRF
from nnlab.models.embedding import WordEmbedding
from nnlab.models.layers import fast_padded, final_states, rnn_layers, rnn_padded, upcast
from nnlab.models.minilm import TopLayers, pool_pieces
from nnlab.models.registry import register

if TYPE_CHECKING:
    from nnlab.models.contextual import PieceBatch


class CharCNN(nn.Module):
    """Ma & Hovy 2016: character embeddings, one convolution, max over the word's characters."""

    def __init__(self, num_chars: int, dim: int = 30, filters: int = 30, width: int = 3):
        super().__init__()
        self.embed = nn.Embedding(num_chars, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, filters, width, padding=width // 2)
        self.out_dim = filters

    def forward(self, chars: torch.Tensor) -> torch.Tensor:  # (B, T, W) -> (B, T, F)
        b, t, w = chars.shape
        x = self.embed(chars.view(b * t, w)).transpose(1, 2)  # (B*T, D, W)
        h = self.conv(x)  # (B*T, F, W)
        h = h.masked_fill((chars.view(b * t, 1, w) == 0), float("-inf")).amax(dim=2)  # (B*T, F)
        return h.nan_to_num(neginf=0.0).view(b, t, -1)  # words with no characters (padding): 0


class CharLSTM(nn.Module):
    """Lample et al. 2016: a BiLSTM over each word's characters; its two final states."""

    def __init__(self, num_chars: int, dim: int = 25, hidden: int = 25):
        super().__init__()
        self.embed = nn.Embedding(num_chars, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, chars: torch.Tensor) -> torch.Tensor:  # (B, T, W) -> (B, T, 2H)
        b, t, w = chars.shape
        flat = chars.view(b * t, w)  # (B*T, W)
        lengths = (flat != 0).sum(dim=1)  # (B*T,)
        real = lengths > 0
        if torch.onnx.is_in_onnx_export():  # the graph has no boolean-mask writes: every word
            # runs (padding as one <pad> character), padding's states are then zeroed
            packed = pack_padded_sequence(self.embed(flat), lengths.clamp(min=1), batch_first=True,
                                          enforce_sorted=False)
            out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # (B*T, W, 2H)
            h = final_states(out, lengths, bidirectional=True)  # (B*T, 2H)
            return (h * real.unsqueeze(1)).view(b, t, -1)
        out = flat.new_zeros((b * t, self.out_dim), dtype=self.embed.weight.dtype)
        if real.any():
            packed = pack_padded_sequence(self.embed(flat[real]), lengths[real].cpu(),
                                          batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)  # h: (2, words, H)
            out[real] = torch.cat([h[0], h[1]], dim=1).to(out.dtype)
        return out.view(b, t, -1)


class BiRNNStack(nn.Module):
    """Bidirectional recurrent layers with their own sizes and dropout between layers."""

    def __init__(self, cell: str, input_dim: int, hidden_sizes: list[int], dropout: float):
        super().__init__()
        self.layers, self.out_dim = rnn_layers(cell, input_dim, hidden_sizes, bidirectional=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D), lengths: (B,) on the CPU -> (B, T, 2H), zero past each length
        return self._padded(x, lengths) if fast_padded(x) else self._packed(x, lengths)

    def _padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The CPU form: padded batches, ~3x faster for LSTMs (see `rnn_padded`)."""
        for i, layer in enumerate(self.layers):
            x = rnn_padded(layer, self.dropout(x) if i else x, lengths)
        return x

    def _packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The GPU (cuDNN) and ONNX form: packed sequences."""
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        for i, layer in enumerate(self.layers):
            if i:
                packed = PackedSequence(self.dropout(packed.data), packed.batch_sizes,
                                        packed.sorted_indices, packed.unsorted_indices)
            packed, _ = layer(packed)
        out, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])
        return out


class ScalarMix(nn.Module):
    """ELMo's learned mix of a pretrained encoder's layers: softmax-weighted sum times a scale."""

    def __init__(self, layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(layers))
        self.scale = nn.Parameter(torch.ones(()))
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, L*H) -> (B, T, H)
        b, t, _ = x.shape
        x = x.view(b, t, self.layers, -1).to(self.weights.dtype)  # (B, T, L, H)
        return self.scale * torch.einsum("btlh,l->bth", x, self.weights.softmax(0))


class TunedContext(nn.Module):
    """Contextual word features from a pretrained encoder whose top layers train with the
    tagger: the layers run over the cached input of the lowest of them (PieceBatch), each
    word takes the mean of its pieces in the input and in every layer's output, and the
    ScalarMix mixes those. `fine_tune_lr` is the layers' own learning rate (nnlab.optim):
    pretrained weights move far less than the tagger's."""

    def __init__(self, layers: int, fine_tune_lr: float):
        super().__init__()
        self.top = TopLayers(layers)
        self.mix = ScalarMix(layers + 1)
        self.fine_tune_lr = fine_tune_lr

    def init_pretrained(self) -> None:
        self.top.init_pretrained()

    def forward(self, batch: PieceBatch) -> torch.Tensor:  # -> (B, T, H)
        dtype = self.mix.weights.dtype
        out = torch.cat(self.top(batch.states.to(dtype), batch.mask), dim=2)  # (W, P, (L+1)*H)
        words = pool_pieces(out, batch.source, batch.target, batch.pieces)  # (B*T, (L+1)*H)
        return self.mix(words.view(*batch.shape, -1))


class SequenceTagger(nn.Module):
    def __init__(self, vocab_size: int, tags: list[str], encoding: str, num_chars: int = 0,
                 cell: str = "lstm", hidden_sizes: tuple[int, ...] = (32,), word_dim: int = 50,
                 chars: str = "none", dropout: float = 0.0, crf: bool = False,
                 constrained: bool = True, frozen_words: int = 0, context_dim: int = 0,
                 context_layers: int = 1, context_tune: int = 0, context_lr: float = 1e-4):
        super().__init__()
        if chars not in ("none", "cnn", "lstm"):
            raise NnlabError(f"model.chars: unknown character features {chars!r} (none, cnn, lstm)")
        self.words = WordEmbedding(vocab_size - frozen_words, frozen_words, word_dim)
        self.chars = None
        feature_dim = word_dim
        if chars != "none":
            self.chars = (CharCNN if chars == "cnn" else CharLSTM)(num_chars)
            feature_dim += self.chars.out_dim
        # contextual word features of a pretrained encoder (nnlab.models.contextual): frozen, or
        # with its top `context_tune` layers trained here
        self.context: nn.Module | None = None
        if context_dim:
            self.context = (TunedContext(context_tune, context_lr) if context_tune
                            else ScalarMix(context_layers))
        feature_dim += context_dim
        self.dropout = nn.Dropout(dropout)
        self.encoder = BiRNNStack(cell, feature_dim, list(hidden_sizes), dropout)
        self.head = nn.Linear(self.encoder.out_dim, len(tags))
        # subtracted from the `O` score when decoding: > 0 trades precision for recall. Chosen on
        # validation data for the best epoch (tasks/keyphrase.py), saved with the weights.
        self.register_buffer("o_bias", torch.zeros(()))
        self.crf = None
        if crf:
            allowed = allowed_transitions(tags, encoding) if constrained else (None, None, None)
            self.crf = CRF(len(tags), *allowed)

    def emissions(self, words: torch.Tensor, chars: torch.Tensor | None, mask: torch.Tensor,
                  context: torch.Tensor | PieceBatch | None = None) -> torch.Tensor:
        # words: (B, T), chars: (B, T, W), mask: (B, T) -> (B, T, N); context: frozen features
        # (B, T, L*H), or the pieces' states under the fine-tuned layers (PieceBatch)
        x = self.words(words)  # (B, T, E)
        if self.chars is not None:
            x = torch.cat([x, self.chars(chars)], dim=2)  # (B, T, E + C)
        if self.context is not None:
            if context is None:
                raise NnlabError("this tagger reads contextual word features; none were given")
            x = torch.cat([x, self.context(context).to(x.dtype)], dim=2)  # (B, T, E + C + H)
        h = self.encoder(self.dropout(x), mask.sum(dim=1).cpu())  # (B, T, 2H)
        return self.head(self.dropout(h))

    def forward(self, words: torch.Tensor, chars: torch.Tensor | None, mask: torch.Tensor,
                context: torch.Tensor | PieceBatch | None = None) -> torch.Tensor:
        return self.emissions(words, chars, mask, context)

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean per sequence: CRF negative log-likelihood, or summed token cross-entropy (the
        same scale, so learning rates carry over between heads)."""
        if self.crf is not None:
            return self.crf(emissions, tags, mask, reduction="mean")
        ce = F.cross_entropy(upcast(emissions).transpose(1, 2), tags, reduction="none")  # (B, T)
        return (ce * mask).sum() / mask.shape[0]

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor, o_bias: float | None = None
               ) -> torch.Tensor:
        """Best tags (B, T); 0 (`O`) where masked. `o_bias`: this offset instead of the model's."""
        bias = float(self.o_bias) if o_bias is None else o_bias
        if bias:
            emissions = emissions.clone()
            emissions[:, :, 0] -= bias
        if self.crf is not None:
            return self.crf.decode(emissions, mask)[0]
        return emissions.argmax(dim=2).masked_fill(~mask, 0)


# -- the registry: the first report's taggers, plus character-feature taggers -------------------
# Adam with a cosine decay over 20 epochs, batch 32 sentences, lookahead-EMA of the weights,
# BIOES tags; measured on Inspec (benchmarks/keyphrase_variants.py): the decay and the weight
# averaging steady the epoch-to-epoch swings of validation span F1
RECIPE = {"optim.name": "adam", "optim.lr": 0.002, "schedule.name": "cosine",
          "data.batch_size": 32, "data.eval_batch_size": 64, "data.encoding": "bioes",
          "train.epochs": 20, "train.grad_clip": 5.0, "train.lookahead": True}


VARIANTS = {
    "birnn": ("rnn", (32,), "bidirectional RNN (tanh), 32 units per direction"),
    "bilstm": ("lstm", (32,), "bidirectional LSTM, 32 units per direction"),
    "bigru": ("gru", (32,), "bidirectional GRU, 32 units per direction"),
    "deep-bilstm": ("lstm", (32, 16, 16), "3-layer bidirectional LSTM, 32/16/16 units"),
}
for _name, (_cell, _sizes, _text) in VARIANTS.items():
    for _crf in (False, True):
        register(f"{_name}-crf" if _crf else _name, "keyphrase",
                 f"{_text}, {'CRF' if _crf else 'softmax per token'}", RECIPE,
                 cell=_cell, hidden_sizes=_sizes, crf=_crf, dropout=0.5)(SequenceTagger)
register("bilstm-cnn-crf", "keyphrase",
         "char-CNN + word features, BiLSTM 100 units per direction, CRF (Ma & Hovy 2016)", RECIPE,
         hidden_sizes=(100,), crf=True, chars="cnn", dropout=0.5)(SequenceTagger)
register("bilstm-lstm-crf", "keyphrase",
         "char-BiLSTM + word features, BiLSTM 100 units per direction, CRF (Lample et al. 2016)",
         RECIPE, hidden_sizes=(100,), crf=True, chars="lstm", dropout=0.5)(SequenceTagger)
