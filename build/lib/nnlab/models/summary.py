"""A layer table like Keras' `model.summary()`: each leaf layer's output shape and parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    name: str  # dotted module path, e.g. "stages.3.conv1"
    kind: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # without the batch dimension
    parameters: int


def layer_table(net: nn.Module, input_shape: tuple[int, ...]) -> list[LayerRow]:
    """Run one zero input of `input_shape` (no batch dim) through `net`, recording leaf layers."""
    rows: list[LayerRow] = []
    hooks = []
    for name, module in net.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: their leaves are listed instead

        def record(mod: nn.Module, _inputs, output, name: str = name) -> None:
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
            rows.append(LayerRow(name, type(mod).__name__, shape,
                                 sum(p.numel() for p in mod.parameters(recurse=False))))

        hooks.append(module.register_forward_hook(record))
    was_training = net.training
    net.eval()  # batch norm accepts a batch of one in eval mode
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return rows


def parameter_table(net: nn.Module) -> list[tuple[str, str, int]]:
    """(module path, its first repr line, own parameters) for each module that holds any.

    For text models, whose inputs (token ids, lengths) have no one fixed shape."""
    rows = []
    for name, module in net.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own:
            rows.append((name, repr(module).split("\n")[0].rstrip("("), own))
    return rows
