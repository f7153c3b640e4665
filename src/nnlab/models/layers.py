"""Small building blocks shared by the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from nnlab.errors import NnlabError


def upcast(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least fp32, for losses and decoding: autocast's bf16 outputs are widened, fp64
    (train.precision=fp64) is kept, so a float64 check run is float64 all the way."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def rnn_layers(cell: str, input_dim: int, hidden_sizes: tuple[int, ...] | list[int],
               bidirectional: bool) -> tuple[nn.ModuleList, int]:
    """One recurrent layer per size, each reading the previous one's output (both directions
    side by side), and the last one's output width. Separate layers rather than `num_layers`,
    so each has its own size and its own dropout between them (the tagger and the Siamese
    encoder both stack them)."""
    if cell not in CELLS:
        raise NnlabError(f"model.cell: unknown cell {cell!r} (rnn, lstm, gru)")
    if not hidden_sizes or min(hidden_sizes) < 1:
        raise NnlabError(f"model.hidden_sizes: need at least one positive size, got {hidden_sizes}")
    layers, dim = [], input_dim
    for size in hidden_sizes:
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        layers.append(CELLS[cell](dim, size, batch_first=True, bidirectional=bidirectional, **kwargs))
        dim = (2 if bidirectional else 1) * size
    return nn.ModuleList(layers), dim


# torch's functional recurrences (what nn.RNN/LSTM/GRU call), by the module's `mode`
_RECURRENCES = {"RNN_TANH": torch.rnn_tanh, "LSTM": torch.lstm, "GRU": torch.gru}


def onehot_rnn(layer: nn.RNNBase, ids: PackedSequence, keep: torch.Tensor | None = None
               ) -> tuple[PackedSequence, torch.Tensor]:
    """`layer` (an RNN/LSTM/GRU whose input size is the vocabulary) run over one-hot words
    without building them: the same outputs and final states as `layer(one_hot(ids))`.

    A one-hot row times the input weights is one column of them, so each direction's input
    projection is a lookup; the layer then reads the looked-up gates through an identity.
    On SICK (a vocabulary of 1,877) the lookup makes the report's Siamese RNN/LSTM training
    steps 1.4-2x faster (benchmarks/onehot_speed.py), whole runs about 2x. `keep` (N, 1), if
    given, scales each word: dropout on a one-hot vector only zeroes or rescales its single 1.
    ids: packed word ids (N,) -> (packed outputs (N, dirs*H), final hidden states (dirs, B, H)).
    """
    dirs = 2 if layer.bidirectional else 1
    suffixes = ["", "_reverse"][:dirs]
    w_ih = [getattr(layer, f"weight_ih_l0{s}") for s in suffixes]  # each (G, V)
    gates = w_ih[0].shape[0]
    x = torch.cat([F.embedding(ids.data, w.t()) for w in w_ih], dim=1)  # (N, dirs*G)
    if keep is not None:
        x = x * keep
    selector = torch.eye(dirs * gates, dtype=x.dtype, device=x.device)  # direction d reads block d
    params: list[torch.Tensor] = []
    for d, s in enumerate(suffixes):
        params += [selector[d * gates:(d + 1) * gates], getattr(layer, f"weight_hh_l0{s}"),
                   getattr(layer, f"bias_ih_l0{s}"), getattr(layer, f"bias_hh_l0{s}")]
    batch = int(ids.batch_sizes[0])
    h0 = torch.zeros(dirs, batch, layer.hidden_size, dtype=x.dtype, device=x.device)
    hx = (h0, h0) if layer.mode == "LSTM" else h0
    out, h, *_ = _RECURRENCES[layer.mode](x, ids.batch_sizes, hx, params, True, 1, 0.0,
                                          layer.training, layer.bidirectional)
    if ids.unsorted_indices is not None:  # the packed batch is sorted by length: undo it
        h = h.index_select(1, ids.unsorted_indices)
    return PackedSequence(out, ids.batch_sizes, ids.sorted_indices, ids.unsorted_indices), h


def final_states(out: torch.Tensor, lengths: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """A recurrent layer's final state per sequence, read off its padded outputs: the forward
    direction's at the last real step, the backward direction's at step 0; (B, T, D) -> (B, D).
    The same values as the layer's returned state, which the ONNX exporter cannot take from
    a packed sequence."""
    last = (lengths.to(out.device) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[2])
    at_end = out.gather(1, last).squeeze(1)  # (B, D)
    if not bidirectional:
        return at_end
    half = out.shape[2] // 2
    return torch.cat([at_end[:, :half], out[:, 0, half:]], dim=1)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, batch_norm: bool = True) -> nn.Sequential:
    """3x3 'same' convolution, optional batch norm, ReLU (bias only without batch norm)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def flat_features(features: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    """Number of features `features` produces for one image: sizes the first dense layer."""
    with torch.no_grad():
        out = features(torch.zeros(1, in_channels, *image_size))
    return out.numel()


def check_image_size(name: str, image_size: tuple[int, int], minimum: int) -> None:
    from nnlab.errors import NnlabError

    if min(image_size) < minimum:
        raise NnlabError(
            f"model {name}: images of {image_size[1]}x{image_size[0]} are too small "
            f"(needs at least {minimum}x{minimum})"
        )
