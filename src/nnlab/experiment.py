"""Train, evaluate and predict with run folders: the steps the CLI and the demo share.

This is the middle floor: it ties config, data, tasks, the training loop and run folders
together, so `cli.py` only parses arguments and prints.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from nnlab import config as config_mod
from nnlab import distributed, models, plots
from nnlab.config import RunConfig
from nnlab.data.image_folder import decode_image
from nnlab.data.images import ImageData, ImageSource, load_images
from nnlab.data.locate import require_data
from nnlab.device import Runtime, make_runtime
from nnlab.errors import NnlabError
from nnlab.host import native_bf16
from nnlab.runs import LAST, RunDir, atomic_write_json
from nnlab.tasks.image import (
    ImageTask,
    build_classifier,
    evaluate_images,
    match_classes,
    split_train_val,
    tta_logits,
)
from nnlab.tasks.keyphrase import KeyphraseTask, build_tagger
from nnlab.tasks.similarity import SimilarityTask, build_regressor
from nnlab.train import Trainer

TASKS = {"image": ImageTask, "keyphrase": KeyphraseTask, "similarity": SimilarityTask}
MODEL_BUILDERS = {"image": build_classifier, "keyphrase": build_tagger,
                  "similarity": build_regressor}
DETAIL_KEYS = ("confusion", "classes", "predictions", "gold")  # in eval/val.json, not the summary


def resolve_config(task: str | None, model: str | None, config_file: str | None = None,
                   data: str | None = None, epochs: int | None = None,
                   sets: list[str] | None = None, embeddings: str | None = None) -> RunConfig:
    """defaults < model recipe < config file < --data/--epochs < --set, validated."""
    raw = config_mod.load_toml(config_file) if config_file else {}
    source = config_file or "config"
    task = task or raw.get("task")
    if task not in TASKS:
        raise NnlabError(f"task {task!r}: unknown task (choose from {', '.join(TASKS)})")
    model = model or raw.get("model", {}).get("name")
    if not model:
        raise NnlabError(f"--model: required (models for {task}: {', '.join(models.names(task))})")
    entry = models.get(model, task)
    cfg = RunConfig(task=task)
    cfg.model.name = entry.name
    for key, value in entry.recipe.items():
        config_mod.set_value(cfg, key, value, f"recipe of {model}")
    config_mod.apply_nested(cfg, raw, source)
    cfg.task, cfg.model.name = task, entry.name
    if data is not None:
        cfg.data.path = data
    if epochs is not None:
        cfg.train.epochs = epochs
    if embeddings is not None:
        if task == "image":
            raise NnlabError("--embeddings: only for text tasks (keyphrase, similarity)")
        cfg.data.embeddings = embeddings
    for text in sets or []:
        key, value = config_mod.parse_assignment(text)
        config_mod.set_value(cfg, key, value)
    models.get(cfg.model.name, task)  # --set model.name=... must name a model too
    models.check_args(cfg.model.name, task, cfg.model.args)  # before any data is read
    config_mod.check_choices(cfg)
    return cfg


def train_run(cfg: RunConfig, out: str | Path, console: Console,
              source: ImageSource | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a new run into `out`. Nothing is written until data and model are known good.

    Under torchrun every rank trains its shard; rank 0 alone writes the run folder."""
    d = distributed.current()
    RunDir.check_new(out)  # before the (slow) data loading
    distributed.barrier()  # every rank checked before rank 0 may create it
    if source is None:
        cfg.data.path = require_data(cfg.task, cfg.data.path)
    runtime = make_runtime(cfg.train, TASKS[cfg.task].conv_net)
    # the config records what `auto` chose on this host, so a resume elsewhere repeats it
    cfg.train.precision = runtime.precision
    cfg.train.channels_last = "on" if runtime.channels_last else "off"
    task = TASKS[cfg.task](cfg, runtime, source=source)
    run = RunDir(out)
    trainer, console = _trainer(cfg, task, runtime, run, console, progress)
    if not d.main:
        return _fit_and_finish(trainer, task, run, console)
    RunDir.create(out)  # only now, with data and model known good
    with run.lock():
        RunDir.check_new(out)  # again, holding the lock: another process may have started here
        run.write_config({
            "config": cfg.to_dict(), "task_info": task.info(),
            "command": sys.argv, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "world_size": d.world,
        })
        try:
            _describe(console, cfg, task, runtime, trainer)
            return _fit_and_finish(trainer, task, run, console)
        except BaseException:
            # nothing to resume yet (failed or interrupted in the first epoch): remove the
            # folder this process made, so the same command can simply run again
            if not (run.path / LAST).exists():
                shutil.rmtree(run.path, ignore_errors=True)
            raise


def resume_run(out: str | Path, console: Console, progress: bool = True) -> dict[str, Any]:
    if distributed.current().main:
        run = RunDir.open(out)
        with run.lock():
            if run.finished:
                raise NnlabError(f"{run.path}: run already finished (summary.json exists)")
            run.remove_stale_temporaries()
            return _resume(run, console, progress)
    return _resume(RunDir(out), console, progress)


def _resume(run: RunDir, console: Console, progress: bool) -> dict[str, Any]:
    main = distributed.current().main
    saved = distributed.broadcast(run.read_config() if main else None)  # other machines may not see it
    cfg = config_mod.from_dict(saved["config"], str(run.path / "config.json"))
    runtime = make_runtime(cfg.train, TASKS[cfg.task].conv_net)
    task = TASKS[cfg.task](cfg, runtime)
    _check_same_data(task.info(), saved["task_info"], run)
    trainer, console = _trainer(cfg, task, runtime, run, console, progress)
    trainer.restore()
    return _fit_and_finish(trainer, task, run, console)


def _trainer(cfg: RunConfig, task, runtime: Runtime, run: RunDir, console: Console,
             progress: bool) -> tuple[Trainer, Console]:
    """The trainer of a new or resumed run, once every rank agrees on the config (but the
    data's local path) and the data bytes; ranks other than 0 print nothing."""
    config = cfg.to_dict()
    config["data"] = {k: v for k, v in config["data"].items() if k != "path"}
    distributed.check_agreement({"config": config, "data": task.info()["data"]["fingerprint"]})
    console = console if distributed.current().main else Console(quiet=True)
    return Trainer(task, cfg, runtime, run, console=console, progress=progress), console


def _check_same_data(now: dict, saved: dict, run: RunDir) -> None:
    if now["data"]["fingerprint"] != saved["data"]["fingerprint"]:
        raise NnlabError(f"{run.path}: the data at {saved['data']['path']} changed since the run "
                         "started; resuming would not reproduce it")


def _describe(console: Console, cfg: RunConfig, task, runtime: Runtime, trainer: Trainer) -> None:
    info = task.info()
    d = info["data"]
    params = sum(p.numel() for p in trainer.model.parameters())
    console.print(
        f"[bold]{cfg.model.name}[/] on {escape(str(d['path']))} ({escape(str(d['format']))}): "
        f"{d['train_examples']:,} train / "
        f"{d['val_examples']:,} validation {task.unit}; {params:,} parameters; "
        f"{runtime.device} {runtime.precision}"
        f"{' channels-last' if runtime.channels_last else ''}; {cfg.optim.name} lr {cfg.optim.lr:g}, "
        f"{cfg.schedule.name} schedule, batch {cfg.data.batch_size}, {cfg.train.epochs} epochs")
    if hasattr(task, "describe"):
        console.print(task.describe(), markup=False, highlight=False)  # names files and words


def _fit_and_finish(trainer: Trainer, task, run: RunDir, console: Console) -> dict[str, Any]:
    summary = trainer.fit()
    if not distributed.current().main:
        return summary  # rank 0 evaluates the best weights and writes the results
    with distributed.alone():
        return _finish(trainer, task, run, console, summary)


def _finish(trainer: Trainer, task, run: RunDir, console: Console, summary: dict[str, Any]
            ) -> dict[str, Any]:
    """Rank 0 alone (or the only process): the best weights' final evaluation and files."""
    # the figures that matter are those of the best weights, not of the last epoch
    trainer.model.load_state_dict(run.load_best())
    finalize = getattr(task, "finalize", None)
    if finalize is not None:  # a post-training choice made on validation data, saved with the weights
        chosen = finalize(trainer.model)
        if chosen:
            run.save_best(trainer.model.state_dict(), {"epoch": str(summary["best_epoch"])})
            summary |= chosen
    val = task.evaluate(trainer.model, "val", detailed=True)
    atomic_write_json(run.path / "eval" / "val.json", val)
    summary["val"] = {k: v for k, v in val.items() if k not in DETAIL_KEYS}
    history = run.read_metrics()
    plots.training_curves(history, task.main_metric, run.plots / "curves.png",
                          title=f"{trainer.cfg.model.name}")
    if "predictions" in val:
        plots.scatter(val["predictions"], val["gold"], run.plots / "scatter_val.png",
                      title=f"{trainer.cfg.model.name}: validation, best epoch (Pearson r "
                            f"{val['pearson']:.3f})")
    if "confusion" in val:
        plots.confusion(val["confusion"], val["classes"], run.plots / "confusion_val.png",
                        title=f"{trainer.cfg.model.name}: validation, best epoch")
    run.write_summary(summary)
    console.print(f"best epoch {summary['best_epoch']}: validation {task.main_metric} "
                  f"{val[task.main_metric]:.4f}, loss {val['loss']:.4f}; run folder {escape(str(run.path))}")
    return summary


# -- using a finished (or running) run ------------------------------------------------------
def load_run(path: str | Path, device: str = "auto"
             ) -> tuple[RunDir, RunConfig, dict, torch.nn.Module, Runtime]:
    """A run's folder, config, task info and best weights in eval mode, on `device`."""
    run = RunDir.open(path)
    saved = run.read_config()
    cfg = config_mod.from_dict(saved["config"], str(run.path / "config.json"))
    cfg.train.device = device
    runtime = make_runtime(cfg.train, TASKS[cfg.task].conv_net)
    if runtime.amp_dtype is not None and runtime.device.type == "cpu" and not native_bf16():
        cfg.train.precision = "fp32"  # trained in bf16 (a GPU, an AMX CPU): emulated here, 10x slower
        runtime = make_runtime(cfg.train, TASKS[cfg.task].conv_net)
    info = saved["task_info"]
    model = MODEL_BUILDERS[cfg.task](cfg, info)
    try:
        model.load_state_dict(run.load_best())
    except RuntimeError as e:
        raise NnlabError(f"{run.path}: weights do not fit the model in config.json ({e})") from None
    model.to(runtime.device, runtime.dtype).eval()
    if runtime.channels_last and cfg.task == "image":
        model = model.to(memory_format=torch.channels_last)
    return run, cfg, info, model, runtime


def evaluate_run(path: str | Path, data: str | None = None, split: str | None = None,
                 device: str = "auto", tta: str | None = None) -> dict[str, Any]:
    """Metrics of the run's best weights on its validation split, or on other labelled data.

    Without --data: `val` (default) re-creates the run's validation split; `test` uses the
    run data's test part. With --data: `all` (default) uses every labelled image there,
    `test` its test part, `val` the same carve-out as training would make.
    """
    run, cfg, info, model, runtime = load_run(path, device)
    split = split or ("all" if data else "val")
    if cfg.task == "keyphrase":
        return _evaluate_keyphrase(run, cfg, info, model, runtime, data, split)
    if cfg.task == "similarity":
        return _evaluate_similarity(run, cfg, info, model, runtime, data, split)
    if tta not in (None, "none", "flip", "flip-translate"):
        raise NnlabError(f"--tta {tta}: unknown (none, flip, flip-translate)")
    if split not in ("val", "test", "all"):
        raise NnlabError(f"--split {split}: unknown split (val, test, all)")
    if data is None:
        if info["data"]["path"] != "generated" and not Path(info["data"]["path"]).exists():
            raise NnlabError(f"{info['data']['path']}: the run's data is gone; pass --data PATH")
        data = info["data"]["path"]
    source = load_images(data)
    where = source.path
    if split == "test":
        if source.test is None:
            raise NnlabError(f"{where}: this data has no test split")
        images = source.test
    elif split == "all":
        images = source.train
        if source.test is not None:
            test = match_classes(source.test, images.classes, where)
            images = ImageData(torch.cat([images.images, test.images]),
                               torch.cat([images.labels, test.labels]), images.classes)
    else:
        images = split_train_val(source.train, cfg.data)[1]  # the same carve-out as training
    images = match_classes(images, info["classes"], where)
    if list(images.shape) != list(info["image_shape"]):
        raise NnlabError(f"{where}: images are {tuple(images.shape)} (C, H, W), the run was "
                         f"trained on {tuple(info['image_shape'])}")
    result = evaluate_images(model, images, runtime, cfg.data.eval_batch_size, detailed=True,
                             tta=tta or cfg.data.tta)
    result |= {"run": str(run.path), "model": cfg.model.name, "data": where, "split": split}
    return result


def predict_images(path: str | Path, files: list[str], top_k: int = 3,
                   device: str = "auto") -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file (any size: resized to the run's)."""
    from PIL import Image

    _run, cfg, info, model, runtime = load_run(path, device)
    c, h, w = info["image_shape"]
    batch = []
    for file in files:
        p = Path(file)
        if not p.is_file():
            raise NnlabError(f"{file}: no such file")
        array = decode_image(p.read_bytes(), file)  # (H, W) or (H, W, 3) uint8
        img = Image.fromarray(array).convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        batch.append(x.view(h, w, c).permute(2, 0, 1))
    x = torch.stack(batch).to(runtime.device, runtime.dtype).div_(255)  # (N, C, H, W)
    with torch.inference_mode(), runtime.autocast():
        probs = tta_logits(model, x, cfg.data.tta).float().softmax(dim=1)  # (N, K)
    k = min(top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    return [
        {"file": file, "top": [{"class": info["classes"][j], "probability": round(p, 6)}
                               for p, j in zip(top.values[i].tolist(), top.indices[i].tolist(),
                                               strict=True)]}
        for i, file in enumerate(files)
    ]


# -- text runs ------------------------------------------------------------------------------
def _labelled_text(data: str | None, split: str, info: dict, read_file, load_source):
    """(examples, where) to evaluate a text run on: a file given with --data, or the validation
    (`val`) or test (`test`) part of a data folder, the run's own when --data is absent."""
    if split not in ("val", "test", "all"):
        raise NnlabError(f"--split {split}: unknown split (val, test, all)")
    if data is not None and Path(data).is_file():
        return read_file(Path(data)), str(Path(data).resolve())
    where = data or info["data"]["path"]
    if not Path(where).exists():
        raise NnlabError(f"{where}: the run's data is gone; pass --data FILE")
    source = load_source(where)
    if split == "test":
        if source.test is None:
            raise NnlabError(f"{where}: no test file there")
        return source.test, where
    if split == "val":
        return source.val, where
    raise NnlabError("--split all: give a file with --data FILE")


def _evaluate_keyphrase(run: RunDir, cfg: RunConfig, info: dict, model: torch.nn.Module,
                        runtime: Runtime, data: str | None, split: str) -> dict[str, Any]:
    """Without --data: the run's validation data (`val`) or its folder's test file (`test`).
    With --data: a labelled CoNLL file, or a folder's validation (`val`) or test file."""
    from nnlab.data.conll import read_conll
    from nnlab.tasks.keyphrase import encode, evaluate_tagger, load_keyphrase

    d = cfg.data
    tagged, where = _labelled_text(
        data, split, info,
        lambda file: read_conll(file, d.tag_scheme, d.collapse_types, d.invalid_tags),
        lambda folder: load_keyphrase(folder, cfg))
    result = evaluate_tagger(model, encode(tagged, info), info, runtime, d.eval_batch_size,
                             detailed=True)
    result.pop("confusion"), result.pop("classes")
    unseen = sorted({s.type for spans in tagged.spans for s in spans} - set(info["types"]))
    result |= {"run": str(run.path), "model": cfg.model.name, "data": where, "split": split,
               "repaired_spans": tagged.repaired, "unseen_types": unseen}
    return result


def predict_keyphrases(path: str | Path, texts: list[str], device: str = "auto"
                       ) -> list[dict[str, Any]]:
    """Keyphrases in raw texts: tokenised as the training data was, tagged, spans mapped back
    to character offsets in the original text."""
    from nnlab.data.conll import TaggedText
    from nnlab.data.tags import spans_from_tags
    from nnlab.data.tokenize import TokenizerStyle, tokenize
    from nnlab.tasks.keyphrase import encode, predict_tags

    _run, cfg, info, model, runtime = load_run(path, device)
    if cfg.task != "keyphrase":
        raise NnlabError(f"{path}: a {cfg.task} run; give it image files, not text")
    style = TokenizerStyle(**info["tokenizer"])
    tokenized = [tokenize(text, style) for text in texts]
    for i, tokens in enumerate(tokenized):
        if not tokens:
            raise NnlabError(f"text {i + 1}: empty; nothing to extract keyphrases from")
    tagged = TaggedText("input", [[t.text for t in toks] for toks in tokenized],
                        [[] for _ in tokenized], [0] * len(tokenized), "bio")
    preds = predict_tags(model, encode(tagged, info), runtime, cfg.data.eval_batch_size)[0][0]
    results = []
    for text, tokens, pred in zip(texts, tokenized, preds, strict=True):
        spans = spans_from_tags([info["tags"][j] for j in pred.tolist()], info["encoding"])[0]
        phrases = []
        for s in spans:
            start, end = tokens[s.start].start, tokens[s.end - 1].end
            phrases.append({"text": text[start:end], "type": s.type, "start": start, "end": end})
        results.append({"text": text, "keyphrases": phrases})
    return results


# -- similarity runs -------------------------------------------------------------------------
def _evaluate_similarity(run: RunDir, cfg: RunConfig, info: dict, model: torch.nn.Module,
                         runtime: Runtime, data: str | None, split: str) -> dict[str, Any]:
    """Without --data: the run's validation pairs (`val`) or its folder's test file (`test`).
    With --data: a pair file, or a folder's validation (`val`) or test file."""
    from nnlab.tasks.similarity import encode_pairs, evaluate_pairs, load_pairs, pair_reader

    pairs, where = _labelled_text(data, split, info, pair_reader(cfg),
                                  lambda folder: load_pairs(folder, cfg))
    result = evaluate_pairs(model, encode_pairs(pairs, info), runtime, cfg.data.eval_batch_size)
    if tuple(pairs.score_range) != tuple(info["score_range"]):
        result["note"] = (f"scores of {where} lie in {list(pairs.score_range)}, the run predicts "
                          f"in {info['score_range']}: MSE is not comparable, correlations are")
    return result | {"run": str(run.path), "model": cfg.model.name, "data": where, "split": split}


def predict_similarity(path: str | Path, pairs: list[tuple[str, str]], device: str = "auto"
                       ) -> list[dict[str, Any]]:
    """Scores for raw sentence pairs, in the run's score range."""
    from nnlab.data.pairs import words
    from nnlab.data.vocab import Vocab
    from nnlab.tasks.similarity import EncodedPairs, predict_scores

    _run, cfg, info, model, runtime = load_run(path, device)
    if cfg.task != "similarity":
        raise NnlabError(f"{path}: a {cfg.task} run, not a similarity run")
    vocab = Vocab.from_dict(info["vocab"])
    a, b = [], []
    for i, (first, second) in enumerate(pairs, start=1):
        for name, text in (("first", first), ("second", second)):
            if not words(text):
                raise NnlabError(f"pair {i}: the {name} sentence is empty")
        a.append(torch.tensor(vocab.lookup(words(first)), dtype=torch.int64))
        b.append(torch.tensor(vocab.lookup(words(second)), dtype=torch.int64))
    enc = EncodedPairs(a, b, torch.zeros(len(pairs)))
    scores = predict_scores(model, enc, runtime, cfg.data.eval_batch_size).tolist()
    return [{"a": p[0], "b": p[1], "score": round(s, 4)} for p, s in zip(pairs, scores, strict=True)]
