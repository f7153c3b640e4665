"""An ensemble as one ONNX graph: every member's export module inside, fed the same inputs,
and the task's combination rule computed in the graph (`nnlab export ENSEMBLE`).

Members that read their inputs alike (images of one shape, each member normalising them
itself inside the graph; one vocabulary, one character set, one word-piece encoder) share the
graph's inputs. Where the task's output has no axis of the inputs' own (a pair's score), members
that read them otherwise may join too (`separate_inputs`): the graph then takes one set of
inputs per way of reading, their names prefixed `set0_`, `set1_`..., and FILE.json says how to
build each (`input_sets`). A cross-encoder on word pieces beside a Siamese LSTM on a GloVe
vocabulary exports so. Taggers' emissions are per word of each input set, so members that read
words otherwise are refused in one line naming the first difference (they evaluate, predict
and serve as an ensemble).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nnlab.errors import NnlabError
from nnlab.tasks.base import ExportSpec

# meta fields that describe a member's own model, not the inputs it reads
PER_MODEL = frozenset({"crf", "decode", "output", "test_time_augmentation", "parity"})


class EnsembleGraph(nn.Module):
    """The members' modules, each on its inputs (`reads`: the positions of a member's inputs
    among the graph's; all of them when None), their first outputs combined by `combine`."""

    def __init__(self, members: list[nn.Module], weights: list[float],
                 combine: Callable[[list[torch.Tensor], list[float]], torch.Tensor],
                 reads: list[list[int]] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.weights = list(weights)
        self.combine = combine
        self.reads = reads

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = []
        for i, member in enumerate(self.members):
            out = member(*(inputs if self.reads is None else [inputs[j] for j in self.reads[i]]))
            outputs.append(out[0] if isinstance(out, tuple) else out)
        return self.combine(outputs, self.weights)


def weighted_sum(outputs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Scores, emissions, probabilities: the weighted mean (weights sum to 1), as PyTorch ops
    an ONNX graph holds too."""
    total = outputs[0] * weights[0]
    for out, w in zip(outputs[1:], weights[1:], strict=True):
        total = total + out * w
    return total


def _reading(spec: ExportSpec) -> str:
    """What decides how a member reads its inputs: their names, dtypes and example shapes,
    and the meta that is not about the model itself (vocabulary, encoder, image shape)."""
    example = spec.inputs(3, torch.Generator().manual_seed(0))
    shapes = {k: [str(v.dtype), list(v.shape)] for k, v in example.items()}
    meta = {k: v for k, v in spec.meta.items() if k not in PER_MODEL}
    return json.dumps([shapes, meta], sort_keys=True, default=str)


def _difference(first: ExportSpec, spec: ExportSpec) -> str:
    """The first thing `spec` reads otherwise than `first`, for the refusal."""
    gen = torch.Generator().manual_seed(0)
    a, b = first.inputs(3, gen), spec.inputs(3, torch.Generator().manual_seed(0))
    if list(a) != list(b) or any(a[k].dtype != b[k].dtype or a[k].shape != b[k].shape for k in a):
        return "takes other graph inputs than the first member"
    key = next(k for k in sorted((set(first.meta) | set(spec.meta)) - PER_MODEL)
               if first.meta.get(k) != spec.meta.get(k))
    return f"reads its inputs otherwise than the first member ({key} differs)"


def combined_spec(specs: list[ExportSpec], weights: list[float], names: list[str],
                  combine: Callable[[list[torch.Tensor], list[float]], torch.Tensor],
                  separate_inputs: bool = False) -> ExportSpec:
    """The first member's spec around an EnsembleGraph of all members' modules. Members that
    read their inputs otherwise than the first get input sets of their own when
    `separate_inputs`, and are refused in one line otherwise (`names`: the members' folders)."""
    first = specs[0]
    readings = [_reading(s) for s in specs]
    kinds = list(dict.fromkeys(readings))  # the ways of reading, in the members' order
    if len(kinds) == 1:
        if any(s.outputs != first.outputs for s in specs):
            raise NnlabError(f"export: {names[1]} has other graph outputs than the first member")
        extras = {k: v for s in specs for k, v in s.extras.items()}
        return dataclasses.replace(first, module=EnsembleGraph([s.module for s in specs], weights,
                                                               combine), extras=extras)
    if not separate_inputs:
        i = next(i for i, r in enumerate(readings) if r != readings[0])
        raise NnlabError(f"export: {names[i]} {_difference(first, specs[i])}; one graph needs "
                         "members that read their inputs alike (evaluate, predict and serve take "
                         "the ensemble as it is)")
    return _with_input_sets(specs, weights, names, combine, [kinds.index(r) for r in readings])


def _with_input_sets(specs: list[ExportSpec], weights: list[float], names: list[str],
                     combine: Callable[[list[torch.Tensor], list[float]], torch.Tensor],
                     kind_of: list[int]) -> ExportSpec:
    """One graph whose inputs are one set per way of reading (`kind_of`: each member's set)."""
    first = specs[0]
    leaders = [specs[kind_of.index(k)] for k in range(max(kind_of) + 1)]  # one spec per set
    example = [s.inputs(3, torch.Generator().manual_seed(0)) for s in leaders]
    positions, flat = [], 0
    for inputs in example:
        positions.append(list(range(flat, flat + len(inputs))))
        flat += len(inputs)

    def prefixed(k: int, name: str) -> str:
        return f"set{k}_{name}"

    def inputs(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {prefixed(k, name): v for k, s in enumerate(leaders)
                for name, v in s.inputs(n, gen).items()}

    axes: dict[str, dict[int, str]] = {o: first.dynamic_axes[o] for o in first.outputs
                                       if o in first.dynamic_axes}
    for k, s in enumerate(leaders):
        for name in example[k]:
            if name in s.dynamic_axes:
                axes[prefixed(k, name)] = {d: a if a == "batch" else prefixed(k, a)
                                           for d, a in s.dynamic_axes[name].items()}
    common = {key: v for key, v in first.meta.items()
              if key in PER_MODEL or all(s.meta.get(key) == v for s in leaders)}
    sets: list[dict[str, Any]] = [
        {"inputs": [prefixed(k, name) for name in example[k]],
         "members": [names[i] for i, kind in enumerate(kind_of) if kind == k]}
        | {key: v for key, v in s.meta.items() if key not in PER_MODEL and key not in common}
        for k, s in enumerate(leaders)]

    def decide(out: Any, given: dict[str, torch.Tensor]) -> list:  # the first set's inputs
        return first.decide(out, {name: given[prefixed(0, name)] for name in example[0]})

    module = EnsembleGraph([s.module for s in specs], weights, combine,
                           [positions[kind] for kind in kind_of])
    extras = {k: v for s in specs for k, v in s.extras.items()}
    return ExportSpec(module, inputs, first.outputs, axes, decide,
                      common | {"input_sets": sets}, extras)
