"""Viterbi decoding for an nnlab CRF tagger exported to ONNX: numpy only, no nnlab or torch.

`nnlab export` copies this file beside the `.onnx` graph, whose `scores` output holds each
token's tag scores (the decoding offset of `O` already applied), and writes the CRF's
`start`, `transitions` [from, to] and `end` scores into the `.json` beside it (forbidden
transitions carry -10000, so decoded paths are well-formed). For one sequence of `length`
tokens:

    tags = viterbi(scores[i, :length], meta["crf"]["start"], meta["crf"]["transitions"],
                   meta["crf"]["end"])
    labels = [meta["tags"][t] for t in tags]
"""

from __future__ import annotations

import numpy as np


def viterbi(scores: np.ndarray, start: np.ndarray, transitions: np.ndarray, end: np.ndarray
            ) -> list[int]:
    """The best tag sequence: scores (T, N) -> T tag ids."""
    scores, start = np.asarray(scores, dtype=np.float32), np.asarray(start, dtype=np.float32)
    transitions, end = np.asarray(transitions, dtype=np.float32), np.asarray(end, dtype=np.float32)
    best = start + scores[0]  # (N,) best score of a path ending in each tag
    back = []
    for t in range(1, len(scores)):
        total = best[:, None] + transitions  # (N, N): from each tag to each tag
        back.append(total.argmax(axis=0))  # (N,) best previous tag for each tag
        best = total.max(axis=0) + scores[t]
    tag = int((best + end).argmax())
    path = [tag]
    for prev in reversed(back):
        tag = int(prev[tag])
        path.append(tag)
    return path[::-1]
