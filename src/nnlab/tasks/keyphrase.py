"""Keyphrase extraction as sequence labelling: CoNLL files -> word/char ids -> tags -> spans.

Sequences keep their own lengths (Inspec abstracts reach 557 tokens): no fixed padding,
no truncation, masks everywhere. Training uses the documents' sentences by default
(`data.train_unit`), batched by similar length (sorted within shuffled chunks of 50
batches), so little time goes into padding; evaluation uses whole documents. The epoch is
picked by exact-match span F1, the metric that counts, at the best decoding offset of `O`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

import nnlab.tasks.keyphrase_ensemble as ensemble
from nnlab import distributed, models
from nnlab.config import KeyphraseDataConfig, RunConfig, TextDataConfig
from nnlab.data.conll import (
    TaggedText,
    carve_validation,
    find_split_files,
    read_conll,
    split_sentences,
)
from nnlab.data.tags import Span, spans_from_tags, tag_set
from nnlab.data.tokenize import Token, TokenizerStyle, tokenize
from nnlab.data.vocab import Vocab
from nnlab.device import Runtime
from nnlab.errors import NnlabError
from nnlab.metrics import confusion_matrix, span_scores, token_scores
from nnlab.models import contextual, minilm
from nnlab.tasks.base import (
    CONFUSION_FIGURES,
    ExportSpec,
    FileOptions,
    PredictOptions,
    RequestLimits,
    Section,
    Source,
    StepOutput,
    eval_mode,
    first,
    fmt,
    shared,
    write_confusion,
)
from nnlab.tasks.ensemble_graph import combined_spec, weighted_sum
from nnlab.tasks.info import KeyphraseDataInfo, KeyphraseInfo
from nnlab.tasks.keyphrase_encoding import Encoded, collate, encode
from nnlab.tasks.keyphrase_export import decider
from nnlab.tasks.keyphrase_export import export_spec as graph_spec
from nnlab.tasks.registry import register_task
from nnlab.tasks.text import (
    TextTask,
    build_vocab,
    check_request_texts,
    embeddings_info,
    load_pretrained,
    load_text_source,
    read_texts,
    word_args,
)

CHUNK_BATCHES = 50  # batches per length-sorted chunk
O_BIASES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # candidate decoding offsets of the O tag


def load_keyphrase(path: str, cfg: RunConfig) -> Source[TaggedText]:
    """A CoNLL folder (train, validation and test files by their usual names) or one file."""
    d = cfg.data

    def read(file: Path) -> TaggedText:
        return read_conll(file, d.tag_scheme, d.collapse_types, d.invalid_tags)

    def carve(train: TaggedText, _file: Path) -> tuple[TaggedText, TaggedText]:
        return carve_validation(train, d.val_size, d.split_seed)

    source, files = load_text_source(path, find_split_files, read, carve, "CoNLL",
                                     "train.txt, train.conll, ...")
    source.format = source.format.replace("CoNLL", f"CoNLL {source.train.scheme}", 1)
    digest = hashlib.sha256()
    for split in ("train", "val"):
        if split in files:
            digest.update(files[split].read_bytes())
    source.fingerprint = digest.hexdigest()[:16]
    return source


class TaggerModel(Protocol):
    """What the keyphrase task needs of a model: emissions, a loss, decoding at an offset of
    `O`, that offset as a buffer (`o_bias`, fixed after training) and its character encoder
    (None when it reads words only)."""

    o_bias: torch.Tensor
    chars: nn.Module | None

    def __call__(self, words: torch.Tensor, chars: torch.Tensor | None, mask: torch.Tensor,
                 context: torch.Tensor | contextual.PieceBatch | None = None) -> torch.Tensor: ...

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor, o_bias: float | None = None
               ) -> torch.Tensor: ...


@register_task
class KeyphraseTask(TextTask):
    name = "keyphrase"
    main_metric = "span_f1"
    train_metric = "token_accuracy"
    unit = "sentences"
    labels: ClassVar[dict[str, Any]] = {"span_f1": "span F1", "span_precision": "span P",
                                        "span_recall": "span R", "token_f1": "token F1"}
    extra_metrics = ("span_precision", "span_recall", "token_f1")
    detail_keys = ("confusion", "classes")
    supplied = ("vocab_size", "tags", "encoding", "num_chars", "frozen_words", "context_dim",
                "context_layers", "context_tune", "context_lr")
    data_folders = ("keyphrase/inspec", "inspec")
    data_sections = (TextDataConfig, KeyphraseDataConfig)
    info_type = KeyphraseInfo
    _info: KeyphraseInfo
    predict_help = "texts ('-' reads stdin; --files: text files)"
    predict_options = FileOptions
    request_kind = "json"
    page_widget = "spans"
    request_help = 'JSON {"texts": ["...", ...]}'


    def load_source(self, path: str) -> Source[TaggedText]:
        return load_keyphrase(path, self.cfg)

    def read_file(self, path: Path) -> TaggedText:
        d = self.cfg.data
        return read_conll(path, d.tag_scheme, d.collapse_types, d.invalid_tags)

    def prepare_training(self, source: Source[TaggedText]) -> None:
        d = self.cfg.data
        train = first(source.train, d.limit)
        documents = len(train)
        if d.train_unit == "sentence":
            train = split_sentences(train)
        all_tokens = [w for seq in train.tokens for w in seq]
        vocab, self.vectors = build_vocab(all_tokens, d)
        chars = Vocab.build((c for w in all_tokens for c in w), 1)
        types = train.types
        self._info = KeyphraseInfo(
            vocab=vocab.to_dict(), chars=chars.to_dict(), types=types,
            encoding=d.encoding, tags=tag_set(types, d.encoding),
            max_word_chars=d.max_word_chars,
            tokenizer=TokenizerStyle.from_tokens(set(all_tokens)).__dict__,
            data=KeyphraseDataInfo(
                path=source.path, format=source.format, fingerprint=source.fingerprint,
                train_examples=len(train), train_documents=documents, train_unit=d.train_unit,
                val_examples=len(source.val), has_test=source.test is not None,
                train_tokens=train.num_tokens(), val_tokens=source.val.num_tokens(),
                repaired_spans=train.repaired + source.val.repaired),
            coverage={"train_tokens": vocab.coverage(all_tokens),
                      "val_tokens": vocab.coverage(w for s in source.val.tokens for w in s)},
            embeddings=embeddings_info(self.vectors, d))
        if d.contextual:
            if d.contextual_layers < 1:
                raise NnlabError(f"data.contextual_layers: {d.contextual_layers}; at least 1")
            if d.contextual_tune < 0:
                raise NnlabError(f"data.contextual_tune: {d.contextual_tune}; 0 (frozen) or more layers")
            self._info.contextual = {"encoder": d.contextual, "model": minilm.NAME,
                                        "layers": d.contextual_tune + 1 if d.contextual_tune
                                        else d.contextual_layers,
                                        "tune": d.contextual_tune, "lr": d.contextual_lr,
                                        "dim": contextual.feature_dim(d.contextual)}
        start = time.perf_counter()
        self.train = encode(train, self._info, device=self.runtime.device)
        self.val = encode(source.val, self._info, device=self.runtime.device)
        if d.contextual:  # computed once per data and cached: the first run pays for it
            self._info.contextual["seconds"] = round(time.perf_counter() - start, 1)

    def describe(self) -> str:
        i = self._info
        text = self.coverage_line() + f"; {len(i.chars['items'])} characters"
        if i.contextual:
            c = i.contextual
            layers = (f"top {c['tune']} layers fine-tuned, their input and outputs mixed"
                      if c.get("tune") else f"top {c['layers']} layers mixed")
            text += (f"; contextual features: {c['model']}, {layers} "
                     f"({c['seconds']:.0f} s to compute or read back)")
        if i.data.repaired_spans:
            text += f"; {i.data.repaired_spans} spans opened by I- tags (read as B-)"
        return text

    def prepare(self, examples: TaggedText, where: str) -> Encoded:
        return encode(examples, self._info)

    def evaluation_notes(self, examples: TaggedText, where: str) -> dict[str, Any]:
        unseen = sorted({s.type for spans in examples.spans for s in spans} - set(self._info.types))
        return {"repaired_spans": examples.repaired, "unseen_types": unseen}

    # -- training ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        args, supplied = word_args(self.cfg.model.args, self._info)
        supplied |= {"tags": self._info.tags, "encoding": self._info.encoding,
                     "num_chars": len(self._info.chars["items"])}
        if self._info.contextual:
            c = self._info.contextual
            supplied |= {"context_dim": c["dim"], "context_layers": c["layers"],
                         "context_tune": c.get("tune", 0), "context_lr": c.get("lr", 1e-4)}
        return models.create(self.cfg.model.name, self.name, args, **supplied)

    def init_model(self, model: TaggerModel) -> None:
        self._with_chars = model.chars is not None  # batches carry characters only when read
        load_pretrained(model, self.vectors, self._info, self.cfg.data, self.cfg.train.seed)
        context = getattr(model, "context", None)
        if hasattr(context, "init_pretrained"):  # fine-tuned encoder layers: the package's weights
            context.init_pretrained()

    def _chunks(self) -> list[int]:
        n, size = len(self.train), self.cfg.data.batch_size * CHUNK_BATCHES
        return [min(size, n - i) for i in range(0, n, size)]

    def steps_per_epoch(self) -> int:
        return sum(-(-c // self.cfg.data.batch_size) for c in self._chunks())

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[list[int]]:
        b = self.cfg.data.batch_size
        order = torch.randperm(len(self.train), generator=gen, device=gen.device).tolist()
        batches, at = [], 0
        for size in self._chunks():
            part = sorted(order[at : at + size], key=lambda i: self.train.lengths[i])
            batches += [part[k : k + b] for k in range(0, size, b)]
            at += size
        for k in torch.randperm(len(batches), generator=gen, device=gen.device).tolist():
            yield batches[k]

    def collate(self, indices: list[int], gen: torch.Generator, epoch: int) -> dict:
        return collate(self.train, indices, self.runtime.device, self._with_chars)

    def step(self, model: TaggerModel, batch: dict) -> StepOutput:
        mask = batch["mask"]
        with self.runtime.autocast():
            emissions = model(batch["words"], batch["chars"], mask, batch.get("context"))  # (B, T, N)
        loss = model.loss(emissions.float(), batch["tags"], mask)
        # the decoded tags (Viterbi for a CRF, whose emissions alone are not its prediction); the
        # O offset is chosen after training, and reading it back would sync the device every step
        decoded = model.decode(emissions.detach().float(), mask, o_bias=0.0)
        correct = ((decoded == batch["tags"]) & mask).sum()
        tokens = batch["tokens"]
        # optimised: mean per sequence; logged: per token, as the validation loss
        return StepOutput(loss=loss, count=mask.shape[0], loss_sum=loss.detach() * mask.shape[0],
                          loss_count=tokens, metric_sum=correct, metric_count=tokens)

    # -- evaluation -------------------------------------------------------------------------
    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Each epoch at its best `O` offset when calibrating, so the epoch is picked on the
        figure the run will report."""
        biases = O_BIASES if self.cfg.data.calibrate_o_bias else (None,)
        return self._evaluate(model, self.val, biases)

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        """Fix the decoding offset of `O` chosen on the validation data for the best epoch, if
        asked (`data.calibrate_o_bias`): taggers trained on keyphrases under-predict them, and
        span F1 is best where precision and recall meet. Returns the choice, for the summary."""
        if not self.cfg.data.calibrate_o_bias:
            return {}
        chosen = self.validate(model)["o_bias"]
        without = self._evaluate(model, self.val, (0.0,))
        model.o_bias.fill_(chosen)
        return {"o_bias": chosen, "val_span_f1_without_o_bias": without["span_f1"]}

    def evaluate(self, model: nn.Module, data: Encoded, details: bool = False,
                 tta: str = "none") -> dict[str, Any]:
        """At the offset fixed in the model."""
        return self._evaluate(model, data, (None,), details)

    def _evaluate(self, model: nn.Module, enc: Encoded, biases: tuple[float | None, ...],
                  details: bool = False) -> dict[str, Any]:
        batch = self.cfg.data.eval_batch_size
        loss_sum = 0.0

        def tags_of(idx: list[int]) -> list[tuple[torch.Tensor, ...]]:  # each rank its share
            nonlocal loss_sum
            preds, loss_sum = predict_tags(model, enc.subset(idx), self.runtime, batch, biases)
            return list(zip(*preds, strict=True))  # per sequence: its tags at each offset

        per_seq = shared(len(enc), tags_of)
        if distributed.current().enabled:
            (loss_sum,) = distributed.all_sum([loss_sum], self.runtime.device)
        preds = [list(p) for p in zip(*per_seq, strict=True)]
        return evaluate_tagger(float(model.o_bias), enc, self._info, details, biases,
                               (preds, loss_sum))

    # -- prediction ---------------------------------------------------------------------------
    def read_inputs(self, inputs: list[str], options: FileOptions) -> list[str]:
        if not inputs:
            raise NnlabError("predict: give at least one text")
        return read_texts(inputs, options.files)

    def public_info(self) -> dict[str, Any]:
        return {"types": self._info.types, "tags": self._info.tags}

    def request_inputs(self, body: Any, files: list[tuple[str, bytes]], limits: RequestLimits
                       ) -> list[str]:
        texts = body.get("texts") if isinstance(body, dict) else None
        if files or not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise NnlabError('send JSON {"texts": ["a text", ...]}')
        for i, text in enumerate(texts, start=1):
            if not text.strip():
                raise NnlabError(f"text {i}: empty; nothing to extract keyphrases from")
        check_request_texts(texts, limits)
        return texts

    def predict(self, model: nn.Module, texts: list[str], options: PredictOptions) -> list[dict]:
        """Keyphrases in raw texts: tokenised as the training data was, tagged, spans mapped
        back to character offsets in the original text."""
        tokenized, enc = self._encode_texts(texts)
        preds = predict_tags(model, enc, self.runtime, self.cfg.data.eval_batch_size)[0][0]
        return self._phrases(texts, tokenized, preds)

    def _encode_texts(self, texts: list[str]) -> tuple[list[list[Token]], Encoded]:
        """Raw texts tokenised as the training data was, and encoded; an empty one is one line."""
        style = TokenizerStyle(**self._info.tokenizer)
        tokenized = [tokenize(text, style) for text in texts]
        for i, tokens in enumerate(tokenized):
            if not tokens:
                raise NnlabError(f"text {i + 1}: empty; nothing to extract keyphrases from")
        tagged = TaggedText("input", [[t.text for t in toks] for toks in tokenized],
                            [[] for _ in tokenized], [0] * len(tokenized), "bio")
        return tokenized, encode(tagged, self._info, use_cache=False, device=self.runtime.device)

    def _phrases(self, texts: list[str], tokenized: list[list[Token]], preds: list[torch.Tensor]
                 ) -> list[dict]:
        """Each text's predicted spans as keyphrases with character offsets."""
        info = self._info
        results = []
        for text, tokens, pred in zip(texts, tokenized, preds, strict=True):
            spans = spans_from_tags([info.tags[j] for j in pred.tolist()], info.encoding)[0]
            phrases = []
            for s in spans:
                start, end = tokens[s.start].start, tokens[s.end - 1].end
                phrases.append({"text": text[start:end], "type": s.type, "start": start, "end": end})
            results.append({"text": text, "keyphrases": phrases})
        return results

    # -- ensembles (tasks.capabilities.Ensemblable; the rules: tasks.keyphrase_ensemble) -----
    ensemble_rules = ensemble.RULES

    def ensemble_key(self) -> dict[str, Any]:
        """Members must emit the same tags, read text alike and know the same span types."""
        i = self._info
        return {"tags": i.tags, "encoding": i.encoding, "types": i.types, "tokenizer": i.tokenizer}

    def outputs(self, model: nn.Module, data: Encoded) -> ensemble.TaggerOutputs:
        return ensemble.tagger_outputs(model, data, self.runtime, self.cfg.data.eval_batch_size)

    def input_outputs(self, model: nn.Module, texts: list[str]) -> ensemble.TaggerOutputs:
        return self.outputs(model, self._encode_texts(texts)[1])

    def combine(self, outputs: list[ensemble.TaggerOutputs], weights: list[float], rule: str
                ) -> ensemble.TaggerOutputs:
        return ensemble.combine(outputs, weights, rule)

    def ensemble_spec(self, specs: list[ExportSpec], weights: list[float], rule: str,
                      names: list[str]) -> ExportSpec:
        """One graph: the weighted mean of the members' emissions (each with its `O` offset);
        the meta's CRF is the weighted mean of the members' (a softmax tagger's: zeros)."""
        if rule != "mean-emissions":
            raise NnlabError(f"export: the {rule} rule needs forward-backward inside the graph; "
                             "write the ensemble with --rule mean-emissions to export it")
        spec = combined_spec(specs, weights, names, weighted_sum)
        crf = ensemble.mean_crf_meta([s.meta["crf"] for s in specs], weights, len(self._info.tags))
        return dataclasses.replace(spec, decide=decider(crf), meta=spec.meta | {
            "crf": crf, "decode": "viterbi (the .viterbi.py file beside)" if crf else "argmax per token",
            "output": "scores: (batch, tokens, tags), the members' weighted mean; decode them"})

    def judge(self, out: ensemble.TaggerOutputs, data: Encoded, details: bool = False
              ) -> dict[str, Any]:
        """`evaluate`'s figures from combined outputs, decoded by Viterbi; the loss is the
        negative log-likelihood of the gold tags under the combined scores."""
        paths, nll = ensemble.decode(out, data.tags)
        return evaluate_tagger(0.0, data, self._info, details, (0.0,), ([paths], nll))

    def part(self, out: ensemble.TaggerOutputs, data: Encoded, indices: list[int]
             ) -> tuple[ensemble.TaggerOutputs, Encoded]:
        return out.subset(indices), data.subset(indices)

    def present(self, out: ensemble.TaggerOutputs, texts: list[str], options: PredictOptions
                ) -> list[dict]:
        style = TokenizerStyle(**self._info.tokenizer)
        return self._phrases(texts, [tokenize(t, style) for t in texts], ensemble.decode(out)[0])

    @classmethod
    def format_predictions(cls, results: list[dict]) -> list[str]:
        lines = []
        for i, r in enumerate(results, start=1):
            phrases = "; ".join(k["text"] for k in r["keyphrases"]) or "(none found)"
            lines.append(f"{i}: {phrases}" if len(results) > 1 else phrases)
        return lines

    @classmethod
    def format_evaluation(cls, r: dict[str, Any]) -> list[str]:
        lines = [f"{r['model']} on {r['data']} ({r['split']}, {r['n']:,} sequences, "
                 f"{r['tokens']:,} tokens)",
                 f"  keyphrases (exact match): F1 {r['span_f1']:.4f}  precision "
                 f"{r['span_precision']:.4f}  recall {r['span_recall']:.4f}  "
                 f"({r['spans_gold']:,} gold, {r['spans_predicted']:,} predicted)",
                 f"  tokens: accuracy {r['token_accuracy']:.4f}; keyword-token F1 "
                 f"{r['token_f1']:.4f} (precision {r['token_precision']:.4f}, recall "
                 f"{r['token_recall']:.4f})"]
        if len(r["per_type"]) > 1:
            for name, m in r["per_type"].items():
                lines.append(f"  {name:>14}  F1 {m['f1']:.4f}  precision {m['precision']:.4f}  "
                             f"recall {m['recall']:.4f}  ({m['support']} gold)")
        if r["repaired_spans"]:
            lines.append(f"  note: {r['repaired_spans']} gold spans open with an I- tag (read as B-)")
        if r["unseen_types"]:
            lines.append(f"  note: span types the run never saw: {', '.join(r['unseen_types'])}")
        return lines

    # -- reports ------------------------------------------------------------------------------
    write_plots = write_confusion
    run_figures = CONFUSION_FIGURES

    @classmethod
    def report_sections(cls, runs: list[tuple[str, dict[str, Any]]]) -> list[Section]:
        """Validation F1 per span type (support = gold spans), when there are several types."""
        runs = [(name, val) for name, val in runs if val.get("per_type")]
        types = sorted({t for _, val in runs for t in val["per_type"]})
        if len(types) < 2:  # one type: its F1 is the span F1 of the main table
            return []
        rows = []
        for t in types:
            support = next((val["per_type"][t]["support"] for _, val in runs if t in val["per_type"]), 0)
            rows.append([t, f"{support:,}", *[fmt(val["per_type"].get(t, {}).get("f1"), 3)
                                              for _, val in runs]])
        return [Section("Validation F1 per keyphrase type", ["type", "gold spans",
                                                              *[n for n, _ in runs]], rows)]

    def export_spec(self, model: nn.Module) -> ExportSpec:
        """Graph: word ids, character ids, the mask (and word pieces, for taggers on
        contextual features) -> each token's tag scores (nnlab.tasks.keyphrase_export)."""
        return graph_spec(model, self._info)

    @classmethod
    def example_info(cls, input_shape: tuple[int, int, int], classes: int) -> KeyphraseInfo:
        """BIO tags of one type, 100 characters, 20,000 words."""
        return KeyphraseInfo(
            vocab=cls.example_vocab(), types=["KEY"], tags=tag_set(["KEY"], "bio"), encoding="bio",
            chars={"items": ["<pad>", "<unk>", *[chr(65 + i % 58) + str(i) for i in range(98)]]},
            max_word_chars=20, tokenizer={}, data=KeyphraseDataInfo.example())


def predict_tags(model: TaggerModel, enc: Encoded, runtime: Runtime, batch_size: int,
                 o_biases: tuple[float | None, ...] = (None,)
                 ) -> tuple[list[list[torch.Tensor]], float]:
    """Decoded tag ids per sequence for each decoding offset of `O` (None: the model's own),
    and the summed loss. Emissions are computed once; sequences are sorted by length so
    batches are dense."""
    with eval_mode(model):
        return _predict_tags(model, enc, runtime, batch_size, o_biases)


def _predict_tags(model: TaggerModel, enc: Encoded, runtime: Runtime, batch_size: int,
                  o_biases: tuple[float | None, ...]) -> tuple[list[list[torch.Tensor]], float]:
    order = sorted(range(len(enc)), key=lambda i: enc.lengths[i])
    preds: list[list[torch.Tensor]] = [[None] * len(enc) for _ in o_biases]  # type: ignore[list-item]
    loss_sum = 0.0
    with_chars = model.chars is not None
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        batch = collate(enc, idx, runtime.device, with_chars)
        mask = batch["mask"]
        with runtime.autocast():
            emissions = model(batch["words"], batch["chars"], mask, batch.get("context")).float()  # (B, T, N)
        loss_sum += model.loss(emissions, batch["tags"], mask).item() * len(idx)
        for out, decoded in zip(preds, _decode_at(model, emissions, mask, o_biases), strict=True):
            for row, i in enumerate(idx):
                out[i] = decoded[row, : enc.lengths[i]]
    return preds, loss_sum


def _decode_at(model: TaggerModel, emissions: torch.Tensor, mask: torch.Tensor,
               o_biases: tuple[float | None, ...]) -> torch.Tensor:
    """Decoded tags at each offset of `O`, (K, B, T) on the CPU. Several offsets are decoded
    as one batch of K*B sequences, the offset already subtracted: the same paths as K calls,
    with K times fewer of Viterbi's per-step loops (the validation sweep is 7 offsets)."""
    if len(o_biases) == 1:
        return model.decode(emissions, mask, o_biases[0]).cpu().unsqueeze(0)
    k, (b, t, n) = len(o_biases), emissions.shape
    shifted = emissions.unsqueeze(0).repeat(k, 1, 1, 1)  # (K, B, T, N)
    shifted[..., 0] -= torch.tensor([float(o) for o in o_biases], device=emissions.device).view(k, 1, 1)
    decoded = model.decode(shifted.view(k * b, t, n), mask.repeat(k, 1), 0.0)  # (K*B, T)
    return decoded.cpu().view(k, b, t)


def evaluate_tagger(model_o_bias: float, enc: Encoded, info: KeyphraseInfo, details: bool,
                    o_biases: tuple[float | None, ...],
                    predicted: tuple[list[list[torch.Tensor]], float]) -> dict:
    """Span P/R/F1 (exact match), token accuracy and token-level keyword F1, and the loss
    (negative log-likelihood or cross-entropy per token).

    With several `o_biases`, the metrics are those of the offset with the best span F1,
    which is returned as `o_bias` (how the offset is chosen on validation data).
    `predicted`: predict_tags' output, per offset (put together from every rank's share)."""
    all_preds, loss_sum = predicted
    tags = info.tags
    best = None
    for preds, bias in zip(all_preds, o_biases, strict=True):
        pred_spans = [spans_from_tags([tags[j] for j in p.tolist()], info.encoding)[0]
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
    result["o_bias"] = model_o_bias if bias is None else bias
    result["token_accuracy"] = (gold_tags == pred_tags).double().mean().item()
    result |= token_scores(_in_span(enc.spans, enc.lengths), _in_span(pred_spans, enc.lengths))
    result |= {"n": n, "tokens": int(gold_tags.numel())}
    if details:
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
