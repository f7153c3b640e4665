"""How a keyphrase tagger goes into an ONNX graph (`nnlab export`).

The graph returns each token's tag scores, the offset of `O` applied; a CRF tagger's Viterbi
runs beside it (FILE.viterbi.py, numpy). A tagger on contextual features (MiniLM) carries
its encoder in the graph: besides the words it reads their word pieces, in the windows that
FILE.pieces.py builds with the tokenizer shipped as FILE.tokenizer.json, and pools each
word's pieces as nnlab does (nnlab.models.contextual), in fp32 where nnlab's feature cache
keeps fp16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nnlab.data.conll import TaggedText
from nnlab.data.tokenize import PTB_BRACKETS, TOKEN
from nnlab.models import contextual, minilm
from nnlab.shipped import pieces as pieces_module
from nnlab.shipped import viterbi as viterbi_module
from nnlab.shipped.viterbi import viterbi
from nnlab.tasks.base import ExportSpec
from nnlab.tasks.info import KeyphraseInfo
from nnlab.tasks.keyphrase_encoding import collate, encode_words

LONG_TEXT = 600  # words of the long text in the parity inputs: more than one encoder window


class PieceFeatures(nn.Module):
    """The tagger's contextual input from word pieces: the encoder (all of it when frozen,
    the frozen layers below the fine-tuned ones otherwise) over the windows, then each
    word's pieces averaged (frozen) or handed on as a PieceBatch (TunedContext)."""

    def __init__(self, encoder: nn.Module, layers: int, tuned: bool):
        super().__init__()
        self.encoder, self.layers, self.tuned = encoder, layers, tuned

    def train(self, mode: bool = True) -> PieceFeatures:
        """The encoder stays in eval mode (no dropout): it is frozen, and shared with
        `predict` (contextual.frozen_encoder)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, pieces: torch.Tensor, piece_mask: torch.Tensor, source: torch.Tensor,
                target: torch.Tensor, b: int, t: int) -> torch.Tensor | contextual.PieceBatch:
        # pieces, piece_mask: (W, P); source, target: (N,) -> (B, T, L*H) or a PieceBatch
        states = minilm.encode(self.encoder, pieces, piece_mask.sum(1),
                               layers=1 if self.tuned else self.layers)  # (W, P, D)
        # scatter_add, not index_add: see minilm.pool_pieces
        ones = torch.ones_like(target, dtype=states.dtype)
        count = states.new_zeros(b * t).scatter_add(0, target, ones)  # (B*T,) pieces per word
        if self.tuned:
            return contextual.PieceBatch(states, piece_mask, source, target, count, (b, t))
        return minilm.pool_pieces(states, source, target, count).view(b, t, -1)


class TaggerScores(nn.Module):
    """The scores a tagger decodes, as one graph: emissions with the offset of `O`
    subtracted. Inputs (words, [chars], mask), then (pieces, piece_mask, source, target) for
    a tagger on contextual features."""

    def __init__(self, tagger: nn.Module, features: PieceFeatures | None = None):
        super().__init__()
        self.tagger, self.features = tagger, features
        first = torch.zeros(len(tagger.head.bias))
        first[0] = 1.0  # O is tag 0
        self.register_buffer("o_only", first)

    def forward(self, words: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        context = None
        if self.features is not None:
            rest, piece_inputs = rest[:-4], rest[-4:]
            context = self.features(*piece_inputs, words.shape[0], words.shape[1])
        chars, mask = rest if len(rest) == 2 else (None, rest[0])
        emissions = self.tagger(words, chars, mask, context).float()  # (B, T, N)
        return emissions - self.tagger.o_bias * self.o_only


def decider(crf_meta: dict[str, Any] | None) -> Callable[[Any, dict[str, torch.Tensor]], list]:
    """The graph's scores (batch, tokens, tags) as tag ids per sequence, as a user decodes them:
    Viterbi under the CRF's scores in the meta, or the argmax per token without a CRF."""
    def decide(out: Any, x: dict[str, torch.Tensor]) -> list[list[int]]:
        lengths = x["mask"].sum(1).tolist()
        if crf_meta is None:
            return [np.asarray(out)[i, :n].argmax(1).tolist() for i, n in enumerate(lengths)]
        return [viterbi(np.asarray(out)[i, :n], *crf_meta.values()) for i, n in enumerate(lengths)]

    return decide


def export_spec(model: nn.Module, info: KeyphraseInfo) -> ExportSpec:
    """Graph: word ids (and character ids, for character-feature taggers), the mask, and the
    word pieces for a tagger on contextual features -> each token's tag scores."""
    with_chars, ctx = model.chars is not None, info.contextual
    words, chars = len(info.vocab["items"]), len(info.chars["items"])
    crf = model.crf
    features = None
    if ctx:
        encoder = contextual.frozen_encoder(ctx["tune"] or None, "cpu")
        features = PieceFeatures(encoder, ctx["layers"], bool(ctx["tune"]))
        tokenizer = minilm.tokenizer()
        known = info.vocab["items"][2:] or ["word"]

    def random_ids(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        # T and the word width grow with n, so the checks (n = 5, 7) see other sizes than
        # the export's example (n = 3)
        t, w = 9 + n, 3 + n
        lengths = torch.randint(1, t + 1, (n,), generator=gen)
        lengths[0] = t  # the longest sets T
        mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)  # (N, T)
        x = {"words": torch.randint(2, max(words, 3), (n, t), generator=gen) * mask}
        if with_chars:
            x["chars"] = torch.randint(2, max(chars, 3), (n, t, w), generator=gen) * mask.unsqueeze(2)
        return x | {"mask": mask}

    def random_text(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        # texts of the vocabulary's words; from n = 5 on, the first is longer than one
        # encoder window, so the check reads windows the export's example did not
        lengths = torch.randint(1, 9 + n, (n,), generator=gen).tolist()
        if n >= 5:
            lengths[0] = LONG_TEXT
        # every third word glued to the next one: words of several pieces, whose states the
        # graph must add up (a word's pieces are read from several rows)
        tokens = [[known[i] + (known[j] if p % 3 == 0 else "") for p, (i, j) in enumerate(
                   torch.randint(len(known), (k, 2), generator=gen).tolist())] for k in lengths]
        batch = collate(encode_words(TaggedText("export", tokens, [[] for _ in tokens], [0] * n, "bio"),
                                      info), list(range(n)), torch.device("cpu"), with_chars)
        x = {"words": batch["words"], **({"chars": batch["chars"]} if with_chars else {}),
             "mask": batch["mask"]}
        return x | {k: torch.from_numpy(v) for k, v in pieces_module.piece_inputs(tokens, tokenizer).items()}

    scores = crf._scores() if crf is not None else None
    crf_meta = None if scores is None else dict(zip(("start", "transitions", "end"),
                                                    (t.detach().tolist() for t in scores), strict=True))

    axes = {"words": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
            "scores": {0: "batch", 1: "tokens"}}
    if with_chars:
        axes["chars"] = {0: "batch", 1: "tokens", 2: "characters"}
    extras = {".viterbi.py": Path(viterbi_module.__file__)} if crf_meta else {}
    described = ("words: int64 (batch, tokens), each token's index in vocabulary.items "
                 "(lower-cased first if vocabulary.lowercase), 1 if absent, 0 for padding; "
                 + ("chars: int64 (batch, tokens, characters), each character's index in "
                    "characters.items (first max_word_chars characters), 1 if absent, 0 "
                    "padding; " if with_chars else "")
                 + "mask: bool (batch, tokens), true on real tokens (the first always)")
    meta = {"contextual": None}
    if ctx:
        axes |= {"pieces": {0: "windows", 1: "window_pieces"},
                 "piece_mask": {0: "windows", 1: "window_pieces"},
                 "source": {0: "word_pieces"}, "target": {0: "word_pieces"}}
        extras |= {".tokenizer.json": minilm.model_dir() / "tokenizer.json",
                   ".pieces.py": Path(pieces_module.__file__)}
        described += ("; pieces, piece_mask, source, target: the same tokens' word pieces, from "
                      "piece_inputs(tokens, load_tokenizer(FILE.tokenizer.json)) in FILE.pieces.py")
        meta["contextual"] = {"encoder": minilm.NAME, "layers": ctx["layers"],
                              "fine_tuned_layers": ctx["tune"], "window": minilm.WINDOW}
    return ExportSpec(
        TaggerScores(model, features), random_text if ctx else random_ids, ["scores"], axes,
        decider(crf_meta),
        meta=meta | {
            "tags": info.tags, "encoding": info.encoding, "vocabulary": info.vocab,
            "characters": info.chars if with_chars else None,
            "max_word_chars": info.max_word_chars, "crf": crf_meta,
            "decode": "viterbi (the .viterbi.py file beside)" if crf_meta else "argmax per token",
            "tokenizer": {"pattern": TOKEN.pattern, "flags": "VERBOSE | IGNORECASE",
                          "ptb_escapes": info.tokenizer, "brackets": PTB_BRACKETS},
            "input": described,
            "output": "scores: (batch, tokens, tags) of each tag per token, to decode"},
        extras=extras)
