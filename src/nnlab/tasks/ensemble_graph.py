"""An ensemble as one ONNX graph: every member's export module inside, fed the same inputs,
and the task's combination rule computed in the graph (`nnlab export ENSEMBLE`).

One graph needs one set of inputs, so its members must read their inputs alike: images of
one shape (each member normalises them itself, inside the graph), or one vocabulary, one
character set, one word-piece encoder. Members that read different encodings (a MiniLM tagger
beside a GloVe BiLSTM-CRF) evaluate, predict and serve as an ensemble, but are refused here in
one line naming the first difference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from nnlab.errors import NnlabError
from nnlab.tasks.base import ExportSpec

# meta fields that describe a member's own model, not the inputs it reads
PER_MODEL = frozenset({"crf", "decode", "output", "test_time_augmentation", "parity"})


class EnsembleGraph(nn.Module):
    """The members' modules on the same inputs, their first outputs combined by `combine`."""

    def __init__(self, members: list[nn.Module], weights: list[float],
                 combine: Callable[[list[torch.Tensor], list[float]], torch.Tensor]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.weights = list(weights)
        self.combine = combine

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = []
        for member in self.members:
            out = member(*inputs)
            outputs.append(out[0] if isinstance(out, tuple) else out)
        return self.combine(outputs, self.weights)


def weighted_sum(outputs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Scores, emissions, probabilities: the weighted mean (weights sum to 1), as PyTorch ops
    an ONNX graph holds too."""
    total = outputs[0] * weights[0]
    for out, w in zip(outputs[1:], weights[1:], strict=True):
        total = total + out * w
    return total


def combined_spec(specs: list[ExportSpec], weights: list[float], names: list[str],
                  combine: Callable[[list[torch.Tensor], list[float]], torch.Tensor]) -> ExportSpec:
    """The first member's spec around an EnsembleGraph of all members' modules; a member that
    reads other inputs than the first is refused in one line (`names`: the members' folders)."""
    first = specs[0]
    gen = torch.Generator().manual_seed(0)
    inputs = list(first.inputs(3, gen))
    for spec, name in zip(specs[1:], names[1:], strict=True):
        if list(spec.inputs(3, torch.Generator().manual_seed(0))) != inputs or spec.outputs != first.outputs:
            raise NnlabError(f"export: {name} takes other graph inputs than the first member; one "
                             "graph needs members that read their inputs alike")
        for key in sorted((set(first.meta) | set(spec.meta)) - PER_MODEL):
            if first.meta.get(key) != spec.meta.get(key):
                raise NnlabError(f"export: {name} reads its inputs otherwise than the first member "
                                 f"({key} differs); one graph needs members that read their inputs "
                                 "alike (evaluate, predict and serve take the ensemble as it is)")
    module = EnsembleGraph([s.module for s in specs], weights, combine)
    extras = {k: v for s in specs for k, v in s.extras.items()}
    return dataclasses.replace(first, module=module, extras=extras)
