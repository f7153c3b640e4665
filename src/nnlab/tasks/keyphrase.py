"""Keyphrase extraction as sequence labelling: CoNLL files -> word/char ids -> tags -> spans.

Sequences keep their own lengths (Inspec abstracts reach 557 tokens): no fixed padding,
no truncation, masks everywhere. Training uses the documents' sentences by default
(`data.train_unit`), batched by similar length (sorted within shuffled chunks of 50
batches), so little time goes into padding; evaluation uses whole documents. The epoch is
picked by exact-match span F1, the metric that counts, at the best decoding offset of `O`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnlab import distributed, models
from nnlab.config import RunConfig
from nnlab.data.conll import (
    TaggedText,
    carve_validation,
    find_split_files,
    read_conll,
    split_sentences,
)
from nnlab.data.tags import Span, spans_from_tags, tag_set, tags_from_spans
from nnlab.data.tokenize import TokenizerStyle
from nnlab.data.vocab import Vocab
from nnlab.device import Runtime
from nnlab.distributed import shard
from nnlab.errors import NnlabError
from nnlab.metrics import confusion_matrix, span_scores, token_scores
from nnlab.tasks.base import StepOutput, first, pick_split, source_or_load
from nnlab.tasks.text import build_vocab, embeddings_info, load_pretrained, word_args

CHUNK_BATCHES = 50  # batches per length-sorted chunk
O_BIASES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # candidate decoding offsets of the O tag


@dataclass
class KeyphraseSource:
    """The files of one data set: train, validation (a file or a carve-out) and maybe test."""

    path: str
    train: TaggedText
    val: TaggedText
    test: TaggedText | None
    fingerprint: str
    format: str


def load_keyphrase(path: str, cfg: RunConfig) -> KeyphraseSource:
    d = cfg.data
    root = Path(path)

    def read(file: Path) -> TaggedText:
        return read_conll(file, d.tag_scheme, d.collapse_types, d.invalid_tags)

    if root.is_dir():
        files = find_split_files(root)
        if "train" not in files:
            raise NnlabError(f"{root}: no train file (looked for train.txt, train.conll, ...)")
    elif root.is_file():
        files = {"train": root}
    else:
        raise NnlabError(f"--data {path}: no such file or folder")
    train = read(files["train"])
    if "val" in files:
        val = read(files["val"])
        fmt = f"CoNLL {train.scheme}, validation file {files['val'].name}"
    else:
        train, val = carve_validation(train, d.val_size, d.split_seed)
        fmt = f"CoNLL {train.scheme}, validation carved from {files['train'].name}"
    test = read(files["test"]) if "test" in files else None
    digest = hashlib.sha256()
    for split in ("train", "val"):
        if split in files:
            digest.update(files[split].read_bytes())
    return KeyphraseSource(str(root.resolve()), train, val, test, digest.hexdigest()[:16], fmt)


@dataclass
class Encoded:
    """A split as tensors, one entry per sequence."""

    words: list[torch.Tensor]  # (T,) int64
    chars: list[torch.Tensor]  # (T, W) int64, W = the sequence's longest word (capped)
    tags: list[torch.Tensor]  # (T,) int64
    spans: list[list[Span]]
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.words)

    def subset(self, idx: list[int]) -> Encoded:
        return Encoded(*([getattr(self, f)[i] for i in idx]
                         for f in ("words", "chars", "tags", "spans", "lengths")))


def encode_chars(tokens: list[str], chars: Vocab, max_chars: int,
                 cache: dict[str, list[int]] | None = None) -> torch.Tensor:
    """(T, W) character ids, zero-padded; `cache` keeps each distinct word's ids (words
    repeat, and one tensor per sequence is far cheaper than one per word)."""
    cache = {} if cache is None else cache
    width = max(1, min(max_chars, max(len(t) for t in tokens)))
    rows = []
    for token in tokens:
        ids = cache.get(token)
        if ids is None:
            ids = cache[token] = chars.lookup(token[:max_chars])
        rows.append(ids + [0] * (width - len(ids)))
    return torch.tensor(rows, dtype=torch.int64).reshape(len(tokens), width)  # (T, W)


def encode(data: TaggedText, info: dict[str, Any]) -> Encoded:
    words, chars = Vocab.from_dict(info["vocab"]), Vocab.from_dict(info["chars"])
    tag_index = {t: i for i, t in enumerate(info["tags"])}
    enc = Encoded([], [], [], [], [])
    char_cache: dict[str, list[int]] = {}
    for tokens, spans in zip(data.tokens, data.spans, strict=True):
        # gold spans of a type the run never saw cannot be predicted: they stay in `spans`
        # (counted as misses) but are tagged O for the loss
        known = [s for s in spans if s.type in info["types"]]
        tags = tags_from_spans(known, len(tokens), info["encoding"])
        enc.words.append(torch.tensor(words.lookup(tokens), dtype=torch.int64))
        enc.chars.append(encode_chars(tokens, chars, info["max_word_chars"], char_cache))
        enc.tags.append(torch.tensor([tag_index[t] for t in tags], dtype=torch.int64))
        enc.spans.append(spans)
        enc.lengths.append(len(tokens))
    return enc


def collate(enc: Encoded, indices: list[int], device: torch.device, with_chars: bool) -> dict:
    """Pad a batch: words, tags (B, T), mask (B, T), chars (B, T, W) or None."""
    b, t = len(indices), max(enc.lengths[i] for i in indices)
    words = torch.zeros(b, t, dtype=torch.int64)
    tags = torch.zeros(b, t, dtype=torch.int64)
    mask = torch.zeros(b, t, dtype=torch.bool)
    chars = None
    if with_chars:
        w = max(enc.chars[i].shape[1] for i in indices)
        chars = torch.zeros(b, t, w, dtype=torch.int64)
    for row, i in enumerate(indices):
        n = enc.lengths[i]
        words[row, :n] = enc.words[i]
        tags[row, :n] = enc.tags[i]
        mask[row, :n] = True
        if chars is not None:
            chars[row, :n, : enc.chars[i].shape[1]] = enc.chars[i]
    batch = {"words": words, "tags": tags, "mask": mask, "chars": chars}
    moved: dict = {k: (v.to(device, non_blocking=True) if v is not None else None)
                   for k, v in batch.items()}
    moved["tokens"] = sum(enc.lengths[i] for i in indices)  # counted on the host: no device sync
    return moved


def build_tagger(cfg: RunConfig, info: dict[str, Any]) -> nn.Module:
    args, supplied = word_args(cfg.model.args, info)
    supplied |= {"tags": info["tags"], "encoding": info["encoding"],
                 "num_chars": len(info["chars"]["items"])}
    return models.create(cfg.model.name, "keyphrase", args, **supplied)


def uses_chars(model: nn.Module) -> bool:
    return getattr(model, "chars", None) is not None


class KeyphraseTask:
    name = "keyphrase"
    main_metric = "span_f1"
    train_metric = "token_accuracy"
    higher_is_better = True
    unit = "sentences"
    conv_net = False  # recurrent nets: fp32 on CPU

    def __init__(self, cfg: RunConfig, runtime: Runtime, source: KeyphraseSource | None = None):
        self.cfg, self.runtime = cfg, runtime
        self.source = source = source_or_load(cfg, source, load_keyphrase, "keyphrase")
        d = cfg.data
        train = first(source.train, d.limit)
        documents = len(train)
        if d.train_unit == "sentence":
            train = split_sentences(train)
        all_tokens = [w for seq in train.tokens for w in seq]
        vocab, self.vectors = build_vocab(all_tokens, d)
        chars = Vocab.build((c for w in all_tokens for c in w), 1)
        types = train.types
        self._info: dict[str, Any] = {
            "vocab": vocab.to_dict(), "chars": chars.to_dict(), "types": types,
            "encoding": d.encoding, "tags": tag_set(types, d.encoding),
            "max_word_chars": d.max_word_chars,
            "tokenizer": TokenizerStyle.from_tokens(set(all_tokens)).__dict__,
            "data": {"path": source.path, "format": source.format,
                     "fingerprint": source.fingerprint, "train_examples": len(train),
                     "train_documents": documents, "train_unit": d.train_unit,
                     "val_examples": len(source.val), "has_test": source.test is not None,
                     "train_tokens": train.num_tokens(), "val_tokens": source.val.num_tokens(),
                     "repaired_spans": train.repaired + source.val.repaired},
            "coverage": {"train_tokens": vocab.coverage(all_tokens),
                         "val_tokens": vocab.coverage(w for s in source.val.tokens for w in s)},
        }
        self._info |= embeddings_info(self.vectors, d)
        self.train = encode(train, self._info)
        self.val = encode(source.val, self._info)
        self.batch_size = d.batch_size

    def info(self) -> dict[str, Any]:
        return self._info

    def describe(self) -> str:
        """A line about vocabulary and pretrained-vector coverage, printed before training."""
        i = self._info
        text = (f"vocabulary {len(i['vocab']['items']):,} words, {len(i['chars']['items'])} "
                f"characters; known tokens: train {i['coverage']['train_tokens']:.1%}, "
                f"validation {i['coverage']['val_tokens']:.1%}")
        if "embeddings" in i:
            e = i["embeddings"]
            text += (f"; {e['name']} ({e['dim']}d) covers {e['found']:,} of "
                     f"{len(i['vocab']['items']) - 2:,} vocabulary words")
        if i["data"]["repaired_spans"]:
            text += f"; {i['data']['repaired_spans']} spans opened by I- tags (read as B-)"
        return text

    # -- training ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        model = build_tagger(self.cfg, self._info)
        self._with_chars = uses_chars(model)  # batches carry characters only when used
        load_pretrained(model, self.vectors, self._info, self.cfg.data, self.cfg.train.seed)
        return model

    def _chunks(self) -> list[int]:
        n, size = len(self.train), self.batch_size * CHUNK_BATCHES
        return [min(size, n - i) for i in range(0, n, size)]

    def steps_per_epoch(self) -> int:
        return sum(-(-c // self.batch_size) for c in self._chunks())

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[dict]:
        order = torch.randperm(len(self.train), generator=gen, device=gen.device).tolist()
        batches, at = [], 0
        for size in self._chunks():
            part = sorted(order[at : at + size], key=lambda i: self.train.lengths[i])
            batches += [part[k : k + self.batch_size] for k in range(0, size, self.batch_size)]
            at += size
        with_chars = self._with_chars
        for k in torch.randperm(len(batches), generator=gen, device=gen.device).tolist():
            yield collate(self.train, shard(batches[k]), self.runtime.device, with_chars)

    def step(self, model: nn.Module, batch: dict) -> StepOutput:
        mask = batch["mask"]
        with self.runtime.autocast():
            emissions = model(batch["words"], batch["chars"], mask)  # (B, T, N)
        loss = model.loss(emissions.float(), batch["tags"], mask)
        # the decoded tags (Viterbi for a CRF, whose emissions alone are not its prediction); the
        # O offset is chosen after training, and reading it back would sync the device every step
        decoded = model.decode(emissions.detach().float(), mask, o_bias=0.0)
        correct = ((decoded == batch["tags"]) & mask).sum()
        tokens = batch["tokens"]
        # optimised: mean per sequence; logged: per token, as the validation loss
        return StepOutput(loss=loss, count=mask.shape[0], metric_sum=correct, metric_count=tokens,
                          loss_sum=loss.detach() * mask.shape[0], loss_count=tokens)

    # -- evaluation -------------------------------------------------------------------------
    def split_data(self, split: str) -> Encoded:
        return pick_split(split, self.train, self.val, self.source,
                          lambda test: encode(test, self._info))

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        """Fix the decoding offset of `O` chosen on the validation data for the best epoch, if
        asked (`data.calibrate_o_bias`): taggers trained on keyphrases under-predict them, and
        span F1 is best where precision and recall meet. Returns the choice, for the summary."""
        if not self.cfg.data.calibrate_o_bias:
            return {}
        chosen = self.evaluate(model, "val")["o_bias"]
        without = evaluate_tagger(model, self.val, self._info, self.runtime,
                                  self.cfg.data.eval_batch_size, o_biases=(0.0,))
        model.o_bias.fill_(chosen)
        return {"o_bias": chosen, "val_span_f1_without_o_bias": without["span_f1"]}

    def evaluate(self, model: nn.Module, split: str = "val", detailed: bool = False) -> dict:
        """Per-epoch validation scores each epoch at its best `O` offset when calibrating, so
        the epoch is picked on the figure the run will report; the final, detailed
        evaluation uses the offset fixed in the model."""
        biases = O_BIASES if (self.cfg.data.calibrate_o_bias and split == "val"
                              and not detailed) else (None,)
        enc = self.split_data(split)
        predicted = None
        if distributed.current().enabled and not detailed:  # each rank decodes its share
            idx = distributed.my_indices(len(enc))
            preds, loss_sum = predict_tags(model, enc.subset(idx), self.runtime,
                                           self.cfg.data.eval_batch_size, biases)
            per_seq = distributed.gather_in_order(len(enc), idx, list(zip(*preds, strict=True)))
            (loss_sum,) = distributed.all_sum([loss_sum], self.runtime.device)
            predicted = ([list(p) for p in zip(*per_seq, strict=True)], loss_sum)
        return evaluate_tagger(model, enc, self._info, self.runtime,
                               self.cfg.data.eval_batch_size, detailed, biases, predicted)


@torch.inference_mode()
def predict_tags(model: nn.Module, enc: Encoded, runtime: Runtime, batch_size: int,
                 o_biases: tuple[float | None, ...] = (None,)
                 ) -> tuple[list[list[torch.Tensor]], float]:
    """Decoded tag ids per sequence for each decoding offset of `O` (None: the model's own),
    and the summed loss. Emissions are computed once; sequences are sorted by length so
    batches are dense."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(enc)), key=lambda i: enc.lengths[i])
    preds: list[list[torch.Tensor]] = [[None] * len(enc) for _ in o_biases]  # type: ignore[list-item]
    loss_sum = 0.0
    with_chars = uses_chars(model)
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        batch = collate(enc, idx, runtime.device, with_chars)
        mask = batch["mask"]
        with runtime.autocast():
            emissions = model(batch["words"], batch["chars"], mask).float()  # (B, T, N)
        loss_sum += model.loss(emissions, batch["tags"], mask).item() * len(idx)
        for out, bias in zip(preds, o_biases, strict=True):
            decoded = model.decode(emissions, mask, bias).cpu()  # (B, T)
            for row, i in enumerate(idx):
                out[i] = decoded[row, : enc.lengths[i]]
    model.train(was_training)
    return preds, loss_sum


def evaluate_tagger(model: nn.Module, enc: Encoded, info: dict[str, Any], runtime: Runtime,
                    batch_size: int, detailed: bool = False,
                    o_biases: tuple[float | None, ...] = (None,),
                    predicted: tuple[list[list[torch.Tensor]], float] | None = None) -> dict:
    """Span P/R/F1 (exact match), token accuracy and token-level keyword F1, and the loss
    (negative log-likelihood or cross-entropy per token).

    With several `o_biases`, the metrics are those of the offset with the best span F1,
    which is returned as `o_bias` (how the offset is chosen on validation data).
    `predicted`: predict_tags' output when it was already computed (split between ranks)."""
    all_preds, loss_sum = predicted or predict_tags(model, enc, runtime, batch_size, o_biases)
    tags = info["tags"]
    best = None
    for preds, bias in zip(all_preds, o_biases, strict=True):
        pred_spans = [spans_from_tags([tags[j] for j in p.tolist()], info["encoding"])[0]
                      for p in preds]
        spans = span_scores(enc.spans, pred_spans)
        if best is None or spans["span_f1"] > best[0]["span_f1"]:
            best = (spans, preds, pred_spans, bias)
    spans, preds, pred_spans, bias = best  # type: ignore[misc]
    gold_tags = torch.cat(enc.tags)  # (tokens,)
    pred_tags = torch.cat(preds)  # (tokens,)
    n = len(enc)
    result: dict[str, Any] = {"loss": loss_sum / max(sum(enc.lengths), 1)}
    per_type = spans.pop("per_type")
    result |= spans
    result["o_bias"] = float(model.o_bias) if bias is None else bias
    result["token_accuracy"] = (gold_tags == pred_tags).double().mean().item()
    result |= token_scores(_in_span(enc.spans, enc.lengths), _in_span(pred_spans, enc.lengths))
    result |= {"n": n, "tokens": int(gold_tags.numel())}
    if detailed:
        result["per_type"] = per_type
        result["confusion"] = confusion_matrix(pred_tags, gold_tags, len(tags)).tolist()
        result["classes"] = list(tags)
    return result


def _in_span(spans: list[list[Span]], lengths: list[int]) -> torch.Tensor:
    flags = []
    for seq, n in zip(spans, lengths, strict=True):
        f = torch.zeros(n, dtype=torch.bool)
        for s in seq:
            f[s.start : s.end] = True
        flags.append(f)
    return torch.cat(flags)
