"""Taggers combined into one: each member's per-token tag scores, the two combination rules,
and the decoding of the result.

A member's output is its emissions per sequence, with its own decoding offset of `O` already
subtracted (what it decodes), and its CRF's start, transition and end scores, constraint
penalties included. A softmax tagger is a CRF whose transition scores are all zero (Viterbi on
zero transitions is the per-token argmax), so CRF and softmax taggers combine alike.

Rules (`rule`, the first is the default; RULES says why):
- `mean-emissions`: the weighted mean of the emissions, decoded by Viterbi under the weighted
  mean of the CRF scores. A mean of log-linear scores is the log-linear model of the summed
  features, so the result is again a CRF, decoded exactly; constraint penalties stay
  prohibitive (a forbidden transition's mean stays far below any allowed one's).
- `mean-marginals`: each member's per-token tag probabilities (CRF marginals by
  forward-backward; a softmax tagger's softmax), their weighted mean, decoded by Viterbi on
  their logarithms under the members' constraints only. Probabilities are on one scale
  whatever each member's emission scale, at the price of ignoring the learnt transitions.
Both decode valid BIO/BIOES wherever the members' CRFs are constrained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnlab.device import Runtime
from nnlab.models.crf import CRF, FORBIDDEN
from nnlab.tasks.base import eval_mode
from nnlab.tasks.ensemble_graph import weighted_sum
from nnlab.tasks.keyphrase_encoding import Encoded, collate

# the default first: on Inspec validation, mean-marginals beat mean-emissions in each of the 4
# seed ensembles measured (3 and 5 seeds of the GloVe BiLSTM-CRF and of the MiniLM tagger: the
# figures are `ensemble_keyphrase*.json` on the docs' Results page), at 1.2-1.8x the inference
# cost; the ONNX graph holds mean-emissions only
RULES = ("mean-marginals", "mean-emissions")


@dataclass
class TaggerOutputs:
    """Per-sequence emissions (T, N) on the CPU, and the CRF scores they decode under."""

    emissions: list[torch.Tensor]
    start: torch.Tensor  # (N,)
    transitions: torch.Tensor  # (N, N)
    end: torch.Tensor  # (N,)
    # the per-token tag probabilities (T, N) under the CRF, once computed (`marginals`):
    # ensemble selection combines the same outputs many times
    probs: list[torch.Tensor] | None = None

    def subset(self, idx: list[int]) -> TaggerOutputs:
        return TaggerOutputs([self.emissions[i] for i in idx], self.start, self.transitions, self.end,
                             None if self.probs is None else [self.probs[i] for i in idx])


def tagger_outputs(model: torch.nn.Module, enc: Encoded, runtime: Runtime, batch_size: int
                   ) -> TaggerOutputs:
    """The member's emissions on every sequence of `enc` (its `O` offset subtracted) and its
    CRF scores (zeros for a softmax tagger)."""
    order = sorted(range(len(enc)), key=lambda i: enc.lengths[i])  # dense batches
    emissions: list[torch.Tensor] = [None] * len(enc)  # type: ignore[list-item]
    with_chars = model.chars is not None
    with eval_mode(model):
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            batch = collate(enc, idx, runtime.device, with_chars)
            with runtime.autocast():
                out = model(batch["words"], batch["chars"], batch["mask"], batch.get("context"))
            out = out.float().cpu()  # (B, T, N)
            out[:, :, 0] -= float(model.o_bias)
            for row, i in enumerate(idx):
                emissions[i] = out[row, : enc.lengths[i]]
        n = model.head.out_features  # tags
        if model.crf is not None:
            start, trans, end = (t.detach().float().cpu() for t in model.crf._scores())
        else:
            start, trans, end = torch.zeros(n), torch.zeros(n, n), torch.zeros(n)
    return TaggerOutputs(emissions, start, trans, end)


def mean_crf_meta(crfs: list[dict[str, list] | None], weights: list[float], tags: int
                  ) -> dict[str, list] | None:
    """The weighted mean of exported CRF scores (start, transitions, end), a softmax tagger's
    counted as zeros; None when no member has a CRF (the graph is decoded by argmax)."""
    if all(c is None for c in crfs):
        return None
    zeros = {"start": torch.zeros(tags), "transitions": torch.zeros(tags, tags), "end": torch.zeros(tags)}
    return {k: weighted_sum([torch.tensor(c[k]) if c else z for c in crfs], weights).tolist()
            for k, z in zeros.items()}


def crf_of(start: torch.Tensor, transitions: torch.Tensor, end: torch.Tensor) -> CRF:
    """A CRF whose scores are these (penalties included: its own penalty buffers stay zero)."""
    crf = CRF(len(start))
    with torch.no_grad():
        crf.start_transitions.copy_(start)
        crf.transitions.copy_(transitions)
        crf.end_transitions.copy_(end)
    return crf


def padded(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N) zero-padded scores and the (B, T) mask of real tokens."""
    lengths = torch.tensor([len(s) for s in sequences])
    x = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)  # (B, T, N)
    return x, torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)


def marginals(out: TaggerOutputs, batch_size: int = 64) -> list[torch.Tensor]:
    """Per-token tag probabilities (T, N) of each sequence under the member's CRF: the
    gradient of log Z with respect to the emissions (forward-backward, by autograd); kept in
    `out.probs`."""
    if out.probs is not None:
        return out.probs
    crf = crf_of(out.start, out.transitions, out.end)
    probs: list[torch.Tensor] = []
    for k in range(0, len(out.emissions), batch_size):
        chunk = out.emissions[k : k + batch_size]
        # autograd on, whatever the caller set (a server thread, an eval_mode block)
        with torch.inference_mode(False), torch.enable_grad():
            x, mask = padded([e.clone() for e in chunk])
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(crf.log_partition(x, mask).sum(), x)  # (B, T, N)
        probs += [grad[i, : len(e)] for i, e in enumerate(chunk)]
    out.probs = probs
    return probs


def combine(outputs: list[TaggerOutputs], weights: list[float], rule: str) -> TaggerOutputs:
    """The members' outputs as one tagger's, by `rule` (module docstring)."""
    def mean(tensors: list[torch.Tensor]) -> torch.Tensor:
        return weighted_sum(tensors, weights)

    if rule == "mean-emissions":
        return TaggerOutputs([mean(list(seq)) for seq in zip(*(o.emissions for o in outputs), strict=True)],
                             mean([o.start for o in outputs]), mean([o.transitions for o in outputs]),
                             mean([o.end for o in outputs]))
    if rule != "mean-marginals":
        raise ValueError(f"unknown tagger rule {rule!r}")
    probs = [marginals(o) for o in outputs]
    emissions = [mean(list(seq)).clamp_min(1e-12).log() for seq in zip(*probs, strict=True)]

    def forbidden(scores: list[torch.Tensor]) -> torch.Tensor:  # any member's constraint holds
        return torch.where(torch.stack(scores).le(FORBIDDEN / 2).any(0), FORBIDDEN, 0.0)

    return TaggerOutputs(emissions, forbidden([o.start for o in outputs]),
                         forbidden([o.transitions for o in outputs]), forbidden([o.end for o in outputs]))


def decode(out: TaggerOutputs, tags: list[torch.Tensor] | None = None, batch_size: int = 64
           ) -> tuple[list[torch.Tensor], float]:
    """Viterbi paths (T,) of every sequence under the combined scores, and with gold `tags`
    the summed negative log-likelihood of them (0.0 without)."""
    crf = crf_of(out.start, out.transitions, out.end)
    paths: list[torch.Tensor] = []
    nll = 0.0
    for k in range(0, len(out.emissions), batch_size):
        chunk = out.emissions[k : k + batch_size]
        x, mask = padded(chunk)
        best = crf.decode(x, mask)[0]  # (B, T)
        paths += [best[i, : len(e)] for i, e in enumerate(chunk)]
        if tags is not None:
            gold = torch.nn.utils.rnn.pad_sequence(tags[k : k + batch_size], batch_first=True)
            with torch.no_grad():
                nll += crf(x, gold, mask, reduction="sum").item()
    return paths, nll
