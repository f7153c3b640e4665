"""Sentence-pair similarity: pair files -> word ids -> a Siamese regressor -> MSE, Pearson r.

The validation split is the data set's own (SICK trial, STS dev) when the folder has one,
else pairs carved from the training file. The epoch is picked on validation Pearson r, as
the reports compare models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from nnlab import models, plots
from nnlab.config import RunConfig, SimilarityDataConfig, TextDataConfig
from nnlab.data.pairs import PairData, find_pair_files, read_pairs, words
from nnlab.data.split import holdout
from nnlab.data.tokenize import TOKEN
from nnlab.data.vocab import Vocab
from nnlab.device import Runtime
from nnlab.errors import NnlabError
from nnlab.metrics import correlations
from nnlab.models import minilm
from nnlab.tasks.base import (
    ExportSpec,
    PredictOptions,
    RequestLimits,
    Source,
    StepOutput,
    eval_mode,
    first,
    shared,
)
from nnlab.tasks.ensemble_graph import combined_spec, weighted_sum
from nnlab.tasks.info import DataInfo, SimilarityInfo
from nnlab.tasks.registry import register_task
from nnlab.tasks.similarity_baselines import glove_cosine, minilm_cosine
from nnlab.tasks.similarity_teacher import teacher_pairs
from nnlab.tasks.text import (
    TextTask,
    build_vocab,
    check_request_texts,
    embeddings_info,
    load_pretrained,
    load_text_source,
    word_args,
)


def pair_reader(cfg: RunConfig) -> Callable[[Path], PairData]:
    d = cfg.data
    columns = tuple(d.pair_columns) if d.pair_columns else None
    score_range = tuple(d.score_range) if d.score_range else None

    def read(path: Path) -> PairData:
        return read_pairs(path, d.pair_layout, columns, score_range)  # type: ignore[arg-type]

    return read


def load_pairs(path: str, cfg: RunConfig) -> Source[PairData]:
    """A pair folder (SICK, STS or TSV files by their usual names) or one pair file."""
    def carve(train: PairData, file: Path) -> tuple[PairData, PairData]:
        keep, held = holdout(len(train), cfg.data.val_size, cfg.data.split_seed, str(file), "pairs")
        return train.subset(keep), train.subset(held)

    source, files = load_text_source(path, find_pair_files, pair_reader(cfg), carve, "pairs",
                                     "SICK_train.txt, sts-train.csv, train.tsv, ...")
    train, val = source.train, source.val
    source.format = f"{train.layout} {source.format}"
    if val.score_range != train.score_range:
        raise NnlabError(f"{files.get('val')}: score range {val.score_range} differs from the "
                         f"training file's {train.score_range}")
    source.fingerprint = train.fingerprint() + (val.fingerprint() if "val" in files else "")
    return source


class PairModel(Protocol):
    """What the similarity task needs of a model: scores of padded pairs (word ids and their
    lengths, on the CPU) and, for training, the loss with the scores."""

    def __call__(self, a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor,
                 b_len: torch.Tensor) -> torch.Tensor: ...

    def loss(self, a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor,
             target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


NO_LABEL = -100  # F.cross_entropy's ignore_index: a pair without an entailment judgment


@dataclass
class EncodedPairs:
    a: list[torch.Tensor]  # (Ta,) int64
    b: list[torch.Tensor]
    scores: torch.Tensor  # (N,) float32
    labels: torch.Tensor | None = None  # (N,) int64 entailment judgments (data.entailment_weight)

    def __len__(self) -> int:
        return len(self.a)

    def subset(self, idx: list[int]) -> EncodedPairs:
        return EncodedPairs([self.a[i] for i in idx], [self.b[i] for i in idx], self.scores[idx],
                            None if self.labels is None else self.labels[idx])

    def joined(self, other: EncodedPairs) -> EncodedPairs:
        labels = None
        if self.labels is not None or other.labels is not None:
            labels = torch.cat([p.labels if p.labels is not None else
                                torch.full((len(p),), NO_LABEL) for p in (self, other)])
        return EncodedPairs(self.a + other.a, self.b + other.b, torch.cat([self.scores, other.scores]),
                            labels)


def encode_pairs(data: PairData, info: SimilarityInfo) -> EncodedPairs:
    """Word ids of the run's vocabulary, or, for models on a pretrained encoder
    (info.wordpieces), its word pieces of the raw sentences."""
    if info.wordpieces:
        a, b = encode_texts([t for t, _ in data.texts], info), encode_texts([t for _, t in data.texts], info)
    else:
        vocab = Vocab.from_dict(info.vocab)
        a = [torch.tensor(vocab.lookup(s), dtype=torch.int64) for s in data.a]
        b = [torch.tensor(vocab.lookup(s), dtype=torch.int64) for s in data.b]
    labels = None
    if info.entailment:  # judgments the run never saw (or none, e.g. a teacher's pairs): ignored
        index = {name: i for i, name in enumerate(info.entailment["labels"])}
        labels = torch.tensor([index.get(x, NO_LABEL) for x in data.labels] if data.labels
                              else [NO_LABEL] * len(data), dtype=torch.int64)
    return EncodedPairs(a, b, torch.tensor(data.scores, dtype=torch.float32), labels)


def encode_texts(texts: list[str], info: SimilarityInfo) -> list[torch.Tensor]:
    """Raw sentences -> (T,) int64 ids each, as the run's model reads them."""
    if info.wordpieces:
        return [torch.tensor(ids, dtype=torch.int64) for ids in minilm.piece_ids(texts)]
    vocab = Vocab.from_dict(info.vocab)
    return [torch.tensor(vocab.lookup(words(t)), dtype=torch.int64) for t in texts]


def collate_pairs(enc: EncodedPairs, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    def pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        out = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.int64)
        for row, s in enumerate(seqs):
            out[row, : len(s)] = s
        return out.to(device, non_blocking=True), lengths  # lengths stay on the CPU for packing

    a, a_len = pad([enc.a[i] for i in idx])
    b, b_len = pad([enc.b[i] for i in idx])
    batch = {"a": a, "a_len": a_len, "b": b, "b_len": b_len,
             "score": enc.scores[idx].to(device, non_blocking=True)}
    if enc.labels is not None:
        batch["label"] = enc.labels[idx].to(device, non_blocking=True)
    return batch



@dataclass
class PairOptions(PredictOptions):
    pairs: str | None = None  # a TSV file of sentence pairs to score


@register_task
class SimilarityTask(TextTask):
    name = "similarity"
    main_metric = "pearson"
    train_metric = "mse"
    unit = "pairs"
    labels: ClassVar[dict[str, Any]] = {"pearson": "Pearson r", "spearman": "Spearman ρ", "mse": "MSE"}
    extra_metrics = ("spearman",)  # the loss column is the MSE
    detail_keys = ("predictions", "gold")
    supplied = ("vocab_size", "score_range", "frozen_words", "entailment_classes", "entailment_weight")
    data_folders = ("sick",)
    data_sections = (TextDataConfig, SimilarityDataConfig)
    info_type = SimilarityInfo
    _info: SimilarityInfo
    predict_help = "two sentences (or --pairs FILE.tsv)"
    predict_options = PairOptions
    request_kind = "json"
    page_widget = "score"
    request_help = 'JSON {"pairs": [["a sentence", "another"], ...]}'
    baselines: ClassVar[dict[str, Callable[[PairData], dict]]] = {
        "glove-cosine": glove_cosine, "minilm-cosine": minilm_cosine}

    def load_source(self, path: str) -> Source[PairData]:
        return load_pairs(path, self.cfg)

    def read_file(self, path: Path) -> PairData:
        return pair_reader(self.cfg)(path)

    @property
    def reads_pieces(self) -> bool:
        """The model reads a pretrained encoder's word pieces, not the run's vocabulary."""
        return models.get(self.cfg.model.name, self.name).reads == "wordpieces"

    def prepare_training(self, source: Source[PairData]) -> None:
        d = self.cfg.data
        train = first(source.train, d.limit)
        data_info = DataInfo(path=source.path, format=source.format,
                             fingerprint=source.fingerprint, train_examples=len(train),
                             val_examples=len(source.val), has_test=source.test is not None)
        if self.reads_pieces:
            if d.embeddings:
                raise NnlabError(f"--embeddings: {self.cfg.model.name} reads {minilm.NAME}'s word "
                                 "pieces, not word vectors")
            minilm.model_dir()  # a missing extra: one line, before any training
            self.vectors = None
            self._info = SimilarityInfo(wordpieces=minilm.NAME,
                                        score_range=list(train.score_range), data=data_info)
        else:
            tokens = [w for s in train.a + train.b for w in s]
            vocab, self.vectors = build_vocab(tokens, d)
            val_tokens = [w for s in source.val.a + source.val.b for w in s]
            self._info = SimilarityInfo(
                vocab=vocab.to_dict(), score_range=list(train.score_range), data=data_info,
                coverage={"train_tokens": vocab.coverage(tokens),
                          "val_tokens": vocab.coverage(val_tokens)},
                embeddings=embeddings_info(self.vectors, d))
        if d.entailment_weight:
            self._info.entailment = entailment_info(train, d.entailment_weight, self.cfg.model.name)
        self.train = encode_pairs(train, self._info)
        if d.teacher:  # knowledge distillation: extra pairs scored by a trained run
            extra, self._info.teacher = teacher_pairs(train, d.teacher, d.teacher_pairs,
                                                         self.cfg.train.device)
            self.train = self.train.joined(encode_pairs(extra, self._info))
        self.val = encode_pairs(source.val, self._info)

    def describe(self) -> str:
        lo, hi = self._info.score_range
        teacher = self._info.teacher
        taught = ""
        if teacher:
            several = "s" * (len(teacher.get("runs", [])) > 1)
            taught = f"; + {teacher['pairs']:,} pairs scored by the teacher{several} {teacher['model']}"
        if self._info.entailment:
            e = self._info.entailment
            taught += f"; + entailment judgments ({', '.join(e['labels'])}) at loss weight {e['weight']:g}"
        if self._info.wordpieces:
            return f"scores in [{lo:g}, {hi:g}]; {self._info.wordpieces} word pieces" + taught
        return f"scores in [{lo:g}, {hi:g}]; " + self.coverage_line() + taught

    def prepare(self, examples: PairData, where: str) -> EncodedPairs:
        return encode_pairs(examples, self._info)

    def evaluation_notes(self, examples: PairData, where: str) -> dict[str, Any]:
        if tuple(examples.score_range) == tuple(self._info.score_range):
            return {}
        return {"note": f"scores of {where} lie in {list(examples.score_range)}, the run predicts "
                        f"in {self._info.score_range}: MSE is not comparable, correlations are"}

    # -- training ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        score_range = tuple(self._info.score_range)
        if self.reads_pieces:
            extra = {}
            if self._info.entailment:
                e = self._info.entailment
                extra = {"entailment_classes": len(e["labels"]), "entailment_weight": e["weight"]}
            return models.create(self.cfg.model.name, self.name, self.cfg.model.args,
                                 score_range=score_range, **extra)
        args, supplied = word_args(self.cfg.model.args, self._info)
        return models.create(self.cfg.model.name, self.name, args, score_range=score_range, **supplied)

    def init_model(self, model: nn.Module) -> None:
        if hasattr(model, "init_pretrained"):  # a pretrained encoder's weights (MiniLM)
            model.init_pretrained()
        load_pretrained(model, self.vectors, self._info, self.cfg.data, self.cfg.train.seed)

    def steps_per_epoch(self) -> int:
        return -(-len(self.train) // self.cfg.data.batch_size)

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[list[int]]:
        b = self.cfg.data.batch_size
        order = torch.randperm(len(self.train), generator=gen, device=gen.device).tolist()
        for k in range(0, len(order), b):
            yield order[k : k + b]

    def collate(self, indices: list[int], gen: torch.Generator, epoch: int) -> dict:
        return collate_pairs(self.train, indices, self.runtime.device)

    def step(self, model: PairModel, batch: dict) -> StepOutput:
        with self.runtime.autocast():
            labels = (batch["label"],) if "label" in batch else ()  # data.entailment_weight
            loss, pred = model.loss(batch["a"], batch["a_len"], batch["b"], batch["b_len"],
                                    batch["score"], *labels)  # scalar, (B,)
        pred = pred.float()
        squared = ((pred.detach() - batch["score"]) ** 2).sum()
        return StepOutput.per_example(loss, pred.shape[0], squared)

    # -- evaluation and prediction ------------------------------------------------------------
    def evaluate(self, model: nn.Module, data: EncodedPairs, details: bool = False,
                 tta: str = "none") -> dict[str, Any]:
        """MSE (also the loss), Pearson r and Spearman rho; with `details`, the predictions."""
        batch = self.cfg.data.eval_batch_size
        pred = torch.tensor(shared(len(data), lambda idx: predict_scores(
            model, data.subset(idx), self.runtime, batch).tolist()))  # (N,)
        return self.judge(pred, data, details)

    def judge(self, pred: torch.Tensor, data: EncodedPairs, details: bool = False) -> dict[str, Any]:
        """`evaluate`'s figures from predicted scores (N,)."""
        result: dict[str, Any] = correlations(pred, data.scores)
        result["loss"] = result["mse"]
        result["n"] = len(data)
        if details:
            result["predictions"] = [round(p, 5) for p in pred.tolist()]
            result["gold"] = data.scores.tolist()
        return result

    def read_inputs(self, inputs: list[str], options: PairOptions) -> list[tuple[str, str]]:
        return read_pair_inputs(inputs, options.pairs)

    def public_info(self) -> dict[str, Any]:
        return {"score_range": self._info.score_range}

    def request_inputs(self, body: Any, files: list[tuple[str, bytes]], limits: RequestLimits
                       ) -> list[tuple[str, str]]:
        pairs = body.get("pairs") if isinstance(body, dict) else None
        if files or not isinstance(pairs, list) or not pairs or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in pairs):
            raise NnlabError('send JSON {"pairs": [["a sentence", "another"], ...]}')
        for i, pair in enumerate(pairs, start=1):
            if any(len(t) > limits.max_chars for t in pair):
                raise NnlabError(f"pair {i}: a sentence longer than the server's limit of "
                                 f"{limits.max_chars:,} characters")
        check_request_texts([t for pair in pairs for t in pair], limits, "sentence")
        return [(a, b) for a, b in pairs]

    def predict(self, model: nn.Module, pairs: list[tuple[str, str]], options: PredictOptions
                ) -> list[dict]:
        """Scores for raw sentence pairs, in the run's score range."""
        return self.present(self.input_outputs(model, pairs), pairs, options)

    def part(self, scores: torch.Tensor, data: EncodedPairs, indices: list[int]
             ) -> tuple[torch.Tensor, EncodedPairs]:
        return scores[indices], data.subset(indices)

    def present(self, scores: torch.Tensor, pairs: list[tuple[str, str]], options: PredictOptions
                ) -> list[dict]:
        """`predict`'s results from scores (N,)."""
        return [{"a": p[0], "b": p[1], "score": round(s, 4)}
                for p, s in zip(pairs, scores.tolist(), strict=True)]

    # -- ensembles (tasks.capabilities.Ensemblable) ------------------------------------------
    # Rule: the mean of the members' scores. Every member predicts on the run's score scale
    # (the same range is required), so a mean is a score of that scale; a cross-encoder and a
    # Siamese LSTM err differently, and averaging cancels part of each one's error.
    ensemble_rules = ("mean-scores",)

    def ensemble_key(self) -> dict[str, Any]:
        return {"score_range": self._info.score_range}

    def outputs(self, model: nn.Module, data: EncodedPairs) -> torch.Tensor:
        """The model's scores (N,) on prepared pairs."""
        return predict_scores(model, data, self.runtime, self.cfg.data.eval_batch_size)

    def input_outputs(self, model: nn.Module, pairs: list[tuple[str, str]]) -> torch.Tensor:
        """The model's scores (N,) of raw sentence pairs; an empty sentence is one line."""
        for i, (first_text, second) in enumerate(pairs, start=1):
            for name, text in (("first", first_text), ("second", second)):
                if not words(text):
                    raise NnlabError(f"pair {i}: the {name} sentence is empty")
        return self.score_texts(model, pairs)

    def ensemble_spec(self, specs: list[ExportSpec], weights: list[float], rule: str,
                      names: list[str]) -> ExportSpec:
        """One graph: the weighted mean of the members' scores. A score has no axis of the
        inputs', so members that read pairs otherwise (word pieces, another vocabulary) join
        with input sets of their own."""
        return combined_spec(specs, weights, names, weighted_sum, separate_inputs=True)

    def combine(self, outputs: list[torch.Tensor], weights: list[float], rule: str) -> torch.Tensor:
        return weighted_sum(outputs, weights)

    def score_texts(self, model: nn.Module, pairs: list[tuple[str, str]]) -> torch.Tensor:
        """The model's scores (N,) of raw sentence pairs (non-empty)."""
        enc = EncodedPairs(encode_texts([a for a, _ in pairs], self._info),
                           encode_texts([b for _, b in pairs], self._info), torch.zeros(len(pairs)))
        return predict_scores(model, enc, self.runtime, self.cfg.data.eval_batch_size)  # (N,)

    @classmethod
    def format_predictions(cls, results: list[dict]) -> list[str]:
        if len(results) == 1:
            return [f"{results[0]['score']:.3f}"]
        return [f"{r['score']:.3f}\t{r['a']}\t{r['b']}" for r in results]

    @classmethod
    def format_evaluation(cls, r: dict[str, Any]) -> list[str]:
        lines = [f"{r['model']} on {r['data']} ({r['split']}, {r['n']:,} pairs): Pearson r "
                 f"{r['pearson']:.4f}, Spearman rho {r['spearman']:.4f}, MSE {r['mse']:.4f}"]
        return lines + ([f"  note: {r['note']}"] if "note" in r else [])

    # -- reports ------------------------------------------------------------------------------
    run_figures = (("scatter_val.png", "predicted against gold scores"),)

    def write_plots(self, folder: Path, val: dict[str, Any], title: str) -> None:
        plots.scatter(val["predictions"], val["gold"], folder / self.run_figures[0][0],
                      title=f"{title}: validation, best epoch (Pearson r {val['pearson']:.3f})")

    def export_spec(self, model: nn.Module) -> ExportSpec:
        """Graph: both sentences' ids and lengths -> the pair's score. Ids are the run's
        vocabulary's, or for MiniLM models the word pieces of [CLS] sentence [SEP] from the
        tokenizer shipped beside the graph."""
        pieces = bool(self._info.wordpieces)
        lo, hi = self._info.score_range
        if pieces:
            low_id, id_count, shortest = minilm.SEP + 1, minilm.tokenizer().get_vocab_size(), 3
            meta = {"score_range": [lo, hi], "encoder": self._info.wordpieces,
                    "input": "a, b: int64 (batch, pieces), the ids that the tokenizer beside the "
                             "graph (FILE.tokenizer.json, for the `tokenizers` library; turn off "
                             "the file's padding and truncation to 128 with no_padding() and "
                             "no_truncation()) gives each sentence, "
                             f"[CLS] {minilm.CLS} ... [SEP] {minilm.SEP}, 0 for padding; "
                             "a_len, b_len: int64 (batch,), their lengths with [CLS] and [SEP]. "
                             f"The encoder reads {minilm.WINDOW} positions: a bi-encoder's "
                             "sentences at most that many pieces each, a cross-encoder's pair "
                             f"(a_len + b_len - 1) at most that many together"}
            extras = {".tokenizer.json": minilm.model_dir() / "tokenizer.json"}
        else:
            low_id, id_count, shortest = 2, len(self._info.vocab["items"]), 1
            meta = {"score_range": [lo, hi], "vocabulary": self._info.vocab,
                    "tokenizer": {"pattern": TOKEN.pattern, "flags": "VERBOSE | IGNORECASE"},
                    "input": "a, b: int64 (batch, tokens), each word's index in vocabulary.items "
                             "(lower-cased first if vocabulary.lowercase), 1 if absent, 0 for "
                             "padding; a_len, b_len: int64 (batch,), the sentences' lengths (>= 1)"}
            extras = {}

        def inputs(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
            # the sides' widths differ, one way at export (n = 3: 8 < 9) and the other at the
            # checks (n = 5, 7), so that a graph that kept the example's sizes fails them
            x = {}
            for side, width in (("a", 5 + n), ("b", 12 - n)):
                lengths = torch.randint(shortest, width + 1, (n,), generator=gen)
                lengths[n - 1] = width
                mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # (n, width)
                ids = torch.randint(low_id, max(id_count, low_id + 1), (n, width), generator=gen) * mask
                if pieces:  # [CLS] ... [SEP]
                    ids[:, 0] = minilm.CLS
                    ids[torch.arange(n), lengths - 1] = minilm.SEP
                x[side], x[f"{side}_len"] = ids, lengths
            return x

        axes = {k: {0: "batch", 1: f"{k}_tokens"} for k in ("a", "b")}
        axes |= {"a_len": {0: "batch"}, "b_len": {0: "batch"}, "score": {0: "batch"}}
        return ExportSpec(
            model, inputs, ["score"], axes,
            decide=lambda _scores, _inputs: [],  # scores, compared within the tolerance
            meta=meta | {"output": f"score: (batch,), in [{lo:g}, {hi:g}]"}, extras=extras)

    @classmethod
    def example_info(cls, input_shape: tuple[int, int, int], classes: int) -> SimilarityInfo:
        """A 20,000-word vocabulary, scores 1-5."""
        return SimilarityInfo(vocab=cls.example_vocab(), score_range=[1.0, 5.0],
                              data=DataInfo.example())


def entailment_info(train: PairData, weight: float, model: str) -> dict[str, Any]:
    """The judgments a cross-encoder learns beside the scores (data.entailment_weight)."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not (
            math.isfinite(weight) and weight > 0):
        raise NnlabError(f"data.entailment_weight: {weight!r}; a number > 0 (or 0: off)")
    if "entailment_classes" not in models.options(model):
        raise NnlabError(f"data.entailment_weight: {model} has no entailment head (minilm-cross has)")
    if not train.labels:
        raise NnlabError(f"data.entailment_weight: {train.path} has no entailment_judgment column")
    return {"labels": sorted(set(train.labels)), "weight": float(weight)}


def predict_scores(model: PairModel, enc: EncodedPairs, runtime: Runtime, batch_size: int
                   ) -> torch.Tensor:
    out = []
    with eval_mode(model):  # type: ignore[arg-type]
        for k in range(0, len(enc), batch_size):
            batch = collate_pairs(enc, list(range(k, min(k + batch_size, len(enc)))), runtime.device)
            with runtime.autocast():
                out.append(model(batch["a"], batch["a_len"], batch["b"], batch["b_len"]).float().cpu())
    return torch.cat(out)  # (N,)


def read_pair_inputs(inputs: list[str], pairs_file: str | None) -> list[tuple[str, str]]:
    """Two sentences given as arguments, or the pairs of a two-column TSV file."""
    if pairs_file is None:
        if len(inputs) != 2:
            raise NnlabError(f"predict: a similarity run takes two sentences (got {len(inputs)}) "
                             "or --pairs FILE.tsv")
        return [(inputs[0], inputs[1])]
    if inputs:
        raise NnlabError("predict: give two sentences or --pairs FILE, not both")
    path = Path(pairs_file)
    if not path.is_file():
        raise NnlabError(f"{pairs_file}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise NnlabError(f"{pairs_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise NnlabError(f"{pairs_file}:{number}: expected 'sentence<TAB>sentence'")
        found.append((fields[0], fields[1]))
    if not found:
        raise NnlabError(f"{pairs_file}: no sentence pairs")
    return found
