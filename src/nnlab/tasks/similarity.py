"""Sentence-pair similarity: pair files -> word ids -> a Siamese regressor -> MSE, Pearson r.

The validation split is the data set's own (SICK trial, STS dev) when the folder has one,
else pairs carved from the training file. The epoch is picked on validation Pearson r, as
the reports compare models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from torch import nn

from nnlab import distributed, models
from nnlab.config import RunConfig
from nnlab.data.pairs import PairData, find_pair_files, read_pairs
from nnlab.data.split import holdout
from nnlab.data.vocab import Vocab
from nnlab.device import Runtime
from nnlab.distributed import shard
from nnlab.errors import NnlabError
from nnlab.tasks.base import StepOutput, first, pick_split, source_or_load
from nnlab.tasks.text import build_vocab, embeddings_info, load_pretrained, word_args


@dataclass
class PairSource:
    path: str
    train: PairData
    val: PairData
    test: PairData | None
    fingerprint: str
    format: str


def pair_reader(cfg: RunConfig):
    d = cfg.data
    columns = tuple(d.pair_columns) if d.pair_columns else None
    score_range = tuple(d.score_range) if d.score_range else None

    def read(path: Path) -> PairData:
        return read_pairs(path, d.pair_layout, columns, score_range)  # type: ignore[arg-type]

    return read


def load_pairs(path: str, cfg: RunConfig) -> PairSource:
    read = pair_reader(cfg)
    root = Path(path)
    if root.is_dir():
        files = find_pair_files(root)
        if "train" not in files:
            raise NnlabError(f"{root}: no training file (looked for SICK_train.txt, sts-train.csv, "
                             "train.tsv, ...)")
    elif root.is_file():
        files = {"train": root}
    else:
        raise NnlabError(f"--data {path}: no such file or folder")
    train = read(files["train"])
    if "val" in files:
        val = read(files["val"])
        fmt = f"{train.layout} pairs, validation file {files['val'].name}"
    else:
        keep, held = holdout(len(train), cfg.data.val_size, cfg.data.split_seed,
                             str(files["train"]), "pairs")
        train, val = train.subset(keep), train.subset(held)
        fmt = f"{train.layout} pairs, validation carved from {files['train'].name}"
    if val.score_range != train.score_range:
        raise NnlabError(f"{files.get('val')}: score range {val.score_range} differs from the "
                         f"training file's {train.score_range}")
    test = read(files["test"]) if "test" in files else None
    fingerprint = train.fingerprint() + (val.fingerprint() if "val" in files else "")
    return PairSource(str(root.resolve()), train, val, test, fingerprint, fmt)


@dataclass
class EncodedPairs:
    a: list[torch.Tensor]  # (Ta,) int64
    b: list[torch.Tensor]
    scores: torch.Tensor  # (N,) float32

    def __len__(self) -> int:
        return len(self.a)

    def subset(self, idx: list[int]) -> EncodedPairs:
        return EncodedPairs([self.a[i] for i in idx], [self.b[i] for i in idx], self.scores[idx])


def encode_pairs(data: PairData, info: dict[str, Any]) -> EncodedPairs:
    vocab = Vocab.from_dict(info["vocab"])
    return EncodedPairs([torch.tensor(vocab.lookup(s), dtype=torch.int64) for s in data.a],
                        [torch.tensor(vocab.lookup(s), dtype=torch.int64) for s in data.b],
                        torch.tensor(data.scores, dtype=torch.float32))


def collate_pairs(enc: EncodedPairs, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    def pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        out = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.int64)
        for row, s in enumerate(seqs):
            out[row, : len(s)] = s
        return out.to(device, non_blocking=True), lengths  # lengths stay on the CPU for packing

    a, a_len = pad([enc.a[i] for i in idx])
    b, b_len = pad([enc.b[i] for i in idx])
    return {"a": a, "a_len": a_len, "b": b, "b_len": b_len,
            "score": enc.scores[idx].to(device, non_blocking=True)}


def build_regressor(cfg: RunConfig, info: dict[str, Any]) -> nn.Module:
    args, supplied = word_args(cfg.model.args, info)
    supplied["score_range"] = tuple(info["score_range"])
    return models.create(cfg.model.name, "similarity", args, **supplied)


def correlations(pred: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    p, g = pred.double().numpy(), gold.double().numpy()
    constant = p.std() == 0  # a constant prediction has no correlation: report 0, not NaN
    return {"mse": float(((p - g) ** 2).mean()),
            "pearson": 0.0 if constant else float(stats.pearsonr(p, g)[0]),
            "spearman": 0.0 if constant else float(stats.spearmanr(p, g)[0])}


class SimilarityTask:
    name = "similarity"
    main_metric = "pearson"
    train_metric = "mse"
    higher_is_better = True
    unit = "pairs"
    conv_net = False  # recurrent nets: fp32 on CPU

    def __init__(self, cfg: RunConfig, runtime: Runtime, source: PairSource | None = None):
        self.cfg, self.runtime = cfg, runtime
        self.source = source = source_or_load(cfg, source, load_pairs, "sentence-pair")
        d = cfg.data
        train = first(source.train, d.limit)
        tokens = [w for s in train.a + train.b for w in s]
        vocab, self.vectors = build_vocab(tokens, d)
        val_tokens = [w for s in source.val.a + source.val.b for w in s]
        self._info: dict[str, Any] = {
            "vocab": vocab.to_dict(), "score_range": list(train.score_range),
            "data": {"path": source.path, "format": source.format,
                     "fingerprint": source.fingerprint, "train_examples": len(train),
                     "val_examples": len(source.val), "has_test": source.test is not None},
            "coverage": {"train_tokens": vocab.coverage(tokens), "val_tokens": vocab.coverage(val_tokens)},
        }
        self._info |= embeddings_info(self.vectors, d)
        self.train = encode_pairs(train, self._info)
        self.val = encode_pairs(source.val, self._info)

    def info(self) -> dict[str, Any]:
        return self._info

    def describe(self) -> str:
        i = self._info
        lo, hi = i["score_range"]
        text = (f"scores in [{lo:g}, {hi:g}]; vocabulary {len(i['vocab']['items']):,} words; known "
                f"tokens: train {i['coverage']['train_tokens']:.1%}, validation "
                f"{i['coverage']['val_tokens']:.1%}")
        if "embeddings" in i:
            e = i["embeddings"]
            text += f"; {e['name']} ({e['dim']}d) covers {e['found']:,} vocabulary words"
        return text

    def build_model(self) -> nn.Module:
        model = build_regressor(self.cfg, self._info)
        load_pretrained(model, self.vectors, self._info, self.cfg.data, self.cfg.train.seed)
        return model

    def steps_per_epoch(self) -> int:
        return -(-len(self.train) // self.cfg.data.batch_size)

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[dict]:
        b = self.cfg.data.batch_size
        order = torch.randperm(len(self.train), generator=gen, device=gen.device).tolist()
        for k in range(0, len(order), b):
            yield collate_pairs(self.train, shard(order[k : k + b]), self.runtime.device)

    def step(self, model: nn.Module, batch: dict) -> StepOutput:
        with self.runtime.autocast():
            loss, pred = model.loss(batch["a"], batch["a_len"], batch["b"], batch["b_len"],
                                    batch["score"])  # scalar, (B,)
        pred = pred.float()
        squared = ((pred.detach() - batch["score"]) ** 2).sum()
        return StepOutput(loss=loss, count=pred.shape[0], metric_sum=squared)

    def split_data(self, split: str) -> EncodedPairs:
        return pick_split(split, self.train, self.val, self.source,
                          lambda test: encode_pairs(test, self._info))

    def evaluate(self, model: nn.Module, split: str = "val", detailed: bool = False) -> dict:
        return evaluate_pairs(model, self.split_data(split), self.runtime,
                              self.cfg.data.eval_batch_size, detailed)


@torch.inference_mode()
def predict_scores(model: nn.Module, enc: EncodedPairs, runtime: Runtime, batch_size: int
                   ) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = []
    for k in range(0, len(enc), batch_size):
        batch = collate_pairs(enc, list(range(k, min(k + batch_size, len(enc)))), runtime.device)
        with runtime.autocast():
            out.append(model(batch["a"], batch["a_len"], batch["b"], batch["b_len"]).float().cpu())
    model.train(was_training)
    return torch.cat(out)  # (N,)


def evaluate_pairs(model: nn.Module, enc: EncodedPairs, runtime: Runtime, batch_size: int,
                   detailed: bool = False) -> dict:
    """MSE (also the loss), Pearson r and Spearman rho; with `detailed`, the predictions."""
    if distributed.current().enabled and not detailed:  # each rank scores its share
        idx = distributed.my_indices(len(enc))
        part = predict_scores(model, enc.subset(idx), runtime, batch_size).tolist()
        pred = torch.tensor(distributed.gather_in_order(len(enc), idx, part))  # (N,)
    else:
        pred = predict_scores(model, enc, runtime, batch_size)
    result: dict[str, Any] = correlations(pred, enc.scores)
    result["loss"] = result["mse"]
    result["n"] = len(enc)
    if detailed:
        result["predictions"] = [round(p, 5) for p in pred.tolist()]
        result["gold"] = enc.scores.tolist()
    return result
