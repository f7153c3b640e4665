"""Small building blocks shared by the models."""

from __future__ import annotations

import torch
from torch import nn

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


def fast_padded(x: torch.Tensor) -> bool:
    """Whether recurrent layers take `rnn_padded` (CPU) rather than packed sequences (cuDNN
    runs packed sequences natively; the ONNX graph keeps the module's own form)."""
    return x.device.type == "cpu" and not torch.onnx.is_in_onnx_export()


def rnn_padded(layer: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor,
               input_weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """`layer` over a padded batch: the outputs packing would give, zero past each length.

    Why: oneDNN's fused RNN kernels take only padded input; on packed sequences torch runs
    its own step-by-step loop. On 2 CPU cores a training step of a 32-unit BiLSTM ran ~3x
    faster this way (benchmarks/rnn_speed.py). The backward direction reads each sequence
    reversed within its length, so in both directions padding comes after the real steps and
    never reaches them.

    `input_weights` (one per direction) replace the layer's input weights, for inputs that
    are already projected (one-hot words looked up: see `SentenceEncoder`).
    x: (B, T, D), lengths: (B,) -> (B, T, dirs*H).
    """
    steps = torch.arange(x.shape[1], device=x.device)  # (T,)
    n = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    real = steps < n  # (B, T)
    # each sequence's real steps in reverse order, padding left where it is (its own inverse)
    reverse = torch.where(real, n - 1 - steps, steps).unsqueeze(2)  # (B, T, 1)
    suffixes = ["", "_reverse"][: 2 if layer.bidirectional else 1]
    h0 = x.new_zeros(1, x.shape[0], layer.hidden_size)
    hx = (h0, h0) if layer.mode == "LSTM" else h0
    outs = []
    for d, s in enumerate(suffixes):
        w_ih = getattr(layer, f"weight_ih_l0{s}") if input_weights is None else input_weights[d]
        params = [w_ih, getattr(layer, f"weight_hh_l0{s}"),
                  getattr(layer, f"bias_ih_l0{s}"), getattr(layer, f"bias_hh_l0{s}")]
        seq = x if d == 0 else x.gather(1, reverse.expand(-1, -1, x.shape[2]))
        out = _RECURRENCES[layer.mode](seq, hx, params, True, 1, 0.0, layer.training, False, True)[0]
        outs.append(out if d == 0 else out.gather(1, reverse.expand(-1, -1, out.shape[2])))  # (B, T, H)
    return torch.cat(outs, dim=2).masked_fill(~real.unsqueeze(2), 0.0)


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
    if min(image_size) < minimum:
        raise NnlabError(
            f"model {name}: images of {image_size[1]}x{image_size[0]} are too small "
            f"(needs at least {minimum}x{minimum})"
        )
