"""Run configuration: dataclasses with defaults, loaded from TOML, overridden by `key=value`.

Precedence, lowest first: dataclass defaults < the model's own recipe (its registry entry)
< a `--config FILE.toml` < explicit CLI flags (`--epochs`, `--data`) < `--set key=value`.
The resolved config is written to the run folder, so a run can always be rebuilt from it.
"""

from __future__ import annotations

import ast
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from nnlab.errors import NnlabError, short


@dataclass
class CommonDataConfig:
    """The data settings every task reads."""

    path: str | None = None  # None: look in $NNLAB_DATA and the download cache
    val_size: float = 0.1  # < 1: fraction of the training data; >= 1: number of examples
    split_seed: int = 0  # seed of the validation split; fixed so every variant shares one split
    batch_size: int = 128
    eval_batch_size: int = 1000
    limit: int = 0  # > 0: keep only this many training examples (stratified), for quick runs


@dataclass
class ImageDataConfig:
    """Images only."""

    # airbench: translate 2 and alternating flips
    augment: Literal["none", "crop-flip", "keras", "airbench"] = "none"
    translate: int = 0  # > 0: pixels of random translation for crop-flip / airbench (4 / 2)
    cutout: int = 0  # > 0: side of a square per training image filled with the mean colour
    tta: Literal["none", "flip", "flip-translate"] = "none"  # test-time augmentation, final evaluation


@dataclass
class TextDataConfig:
    """Text tasks: the word vocabulary and pretrained vectors."""

    embeddings: str = ""  # pretrained word vectors: "glove-6b-50d" or a GloVe-format text file
    freeze_embeddings: bool = False  # keep the pretrained vectors fixed
    embedding_words: int = 50_000  # the vectors' most frequent words added to the vocabulary
    lowercase: bool = True  # lower-case words (GloVe 6B is lower-case); characters keep case
    min_count: int = 2  # training words seen fewer times become <unk> (unless pretrained)


@dataclass
class KeyphraseDataConfig:
    """Keyphrase extraction only."""

    max_word_chars: int = 20  # characters per word for character features
    tag_scheme: Literal["auto", "bio", "bioes", "binary"] = "auto"  # the files' scheme
    encoding: Literal["bio", "bioes"] = "bio"  # the tags the model predicts
    collapse_types: bool = False  # one span type (KEY) for typed data
    invalid_tags: Literal["repair", "error"] = "repair"  # an I-X that opens a span: repair (as conlleval)
    train_unit: Literal["sentence", "document"] = "sentence"  # train on whole documents or their sentences
    calibrate_o_bias: bool = True  # after training, pick the decoding offset of O on validation
    # contextual word features from a frozen pretrained encoder (models.contextual.ENCODERS)
    contextual: Literal["", "minilm"] = ""
    contextual_layers: int = 4  # its top layers, mixed by learned weights (ELMo's scalar mix)
    contextual_tune: int = 0  # > 0: fine-tune its top layers (mixed: their input and outputs)
    contextual_lr: float = 1e-4  # the fine-tuned layers' learning rate (the tagger's: optim.lr)


@dataclass
class SimilarityDataConfig:
    """Sentence-pair similarity only."""

    pair_layout: Literal["auto", "sick", "sts", "tsv"] = "auto"
    pair_columns: tuple[str, str, str] | None = None  # tsv: sentence A, sentence B, score columns
    score_range: tuple[float, float] | None = None  # tsv (or an override): the scores' range
    # a trained similarity run (or a list: their mean) that scores extra pairs of training sentences
    teacher: str | list[str] = ""
    teacher_pairs: int = 0  # how many extra pairs (0: 4 per training pair)
    # > 0: cross-encoders also learn SICK's entailment judgments, a loss of this weight beside
    # the score's (multi-task; the judgments are training labels, never read when predicting)
    entailment_weight: float = 0.0


@dataclass
class DataConfig(SimilarityDataConfig, KeyphraseDataConfig, TextDataConfig, ImageDataConfig,
                 CommonDataConfig):
    """The `[data]` table: the common settings and each task's own section, in one namespace, so
    TOML keys and `--set data.X` stay flat and old run folders load. A task declares the
    sections it reads (`Task.data_sections`); a setting of another section is refused on its
    runs, and `Literal` fields are the choices checked before anything is read."""


COMMON_DATA_KEYS = tuple(f.name for f in fields(CommonDataConfig))


def task_keys() -> frozenset[str]:
    """The config keys only some tasks read: every data section but the common one, and
    train.label_smoothing (image classification's)."""
    return frozenset({f"data.{f.name}" for f in fields(DataConfig) if f.name not in COMMON_DATA_KEYS}
                     | {"train.label_smoothing"})


def section_keys(sections: tuple[type, ...]) -> frozenset[str]:
    """The dotted keys of some data sections (`data.augment`, ...)."""
    return frozenset(f"data.{f.name}" for section in sections for f in fields(section))


def section_choices(sections: tuple[type, ...]) -> dict[str, tuple[str, ...]]:
    """Each `Literal` field of the sections, with its allowed values."""
    out = {}
    for section in sections:
        for name, hint in typing.get_type_hints(section).items():
            if typing.get_origin(hint) is Literal:
                out[f"data.{name}"] = typing.get_args(hint)
    return out


@dataclass
class ModelConfig:
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model function


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | muon (conv filters; SGD on the rest) | adam | adamw | rmsprop | adadelta
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99  # RMSprop smoothing constant (Keras calls it rho, default 0.9); Adadelta's rho
    bias_decay: bool = False  # weight decay on 1-d parameters (biases, norm scales) too
    norm_lr_scale: float = 1.0  # learning-rate factor for normalisation layers' parameters
    muon_lr: float = 0.24  # muon: the convolution filters' learning rate (airbench94_muon's)
    muon_momentum: float = 0.6  # muon: the filters' Nesterov momentum


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | step | cosine | warmup-linear | plateau
    warmup_epochs: float = 0.0  # linear warm-up, for every schedule except plateau
    start_lr_ratio: float = 0.0  # warm-up starts at this fraction of lr
    step_size: int = 30  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    final_lr_ratio: float = 0.0  # cosine / warmup-linear: lr at the end, as a fraction of lr
    patience: int = 5  # plateau: epochs without improvement before the lr is reduced
    factor: float = 0.1  # plateau: reduction factor
    min_lr: float = 0.0  # plateau: lower bound


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 disables clipping
    early_stop_patience: int = 0  # epochs without validation improvement; 0 disables
    precision: str = "auto"  # auto (bf16 on CUDA and for conv nets on native-bf16 CPUs) | fp32 | bf16 | fp64
    channels_last: str = "auto"  # auto (on CUDA, or with bf16) | on | off
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads; 0 keeps torch's default
    tensorboard: bool = False
    log_every: int = 20  # steps between progress-bar updates (each one syncs the device)
    sync_bn: bool = False  # under torchrun on CUDA: batch-norm statistics over all ranks
    compile: bool = False  # torch.compile the training step's model (first steps compile)
    retain_memory: bool = True  # CPU on glibc: keep freed memory for reuse (nnlab.allocator)
    lookahead: bool = False  # airbench's lookahead-EMA of the weights
    lookahead_start_epoch: int = 3  # epochs of plain training before it starts
    lookahead_every: int = 5  # steps between updates
    lookahead_decay: float = 0.95  # per-step EMA decay, warmed up as (step/total)**3


@dataclass
class RunConfig:
    task: str = "image"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a config from a nested dict (a TOML file or a run folder's config.json)."""
    if not isinstance(raw, dict):
        raise NnlabError(f"{source}: expected a table of settings, found {type(raw).__name__}")
    cfg = RunConfig()
    apply_nested(cfg, raw, source)
    try:
        check_choices(cfg)
    except NnlabError as e:
        raise NnlabError(f"{source}: {e}") from None
    return cfg


def apply_nested(cfg: RunConfig, raw: dict[str, Any], source: str) -> None:
    """Apply every leaf of a nested dict as a dotted override, validating names and types."""
    for key, value in _flatten(raw):
        set_value(cfg, key, value, source)


def _flatten(raw: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        # model.args is a free-form dict: its keys are checked against the model's signature later
        if isinstance(value, dict) and dotted != "model.args":
            items.extend(_flatten(value, dotted + "."))
        else:
            items.append((dotted, value))
    return items


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise NnlabError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise NnlabError(f"{path}: a folder, not a config file (expected a .toml file)") from None
    except OSError as e:
        raise NnlabError(f"{path}: cannot read the config file ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise NnlabError(f"{path}: invalid TOML: {short(e)}") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse `key=value` from the command line; the value is a Python/TOML-like literal."""
    if "=" not in text:
        raise NnlabError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    raw = raw.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw  # a bare word: a string


def set_value(cfg: RunConfig, key: str, value: Any, source: str = "--set") -> None:
    """Set a dotted key (`optim.lr`, `model.args.dropout`, `model.dropout`) with type checks."""
    parts = key.split(".")
    if parts[0] == "model" and len(parts) >= 2 and parts[1] not in ("name", "args"):
        parts = ["model", "args", *parts[1:]]  # `model.dropout` is short for `model.args.dropout`
    if parts[:2] == ["model", "args"]:
        if len(parts) == 2:
            if not isinstance(value, dict):
                raise NnlabError(f"{source}: model.args must be a table")
            cfg.model.args.update(value)
        else:
            cfg.model.args[".".join(parts[2:])] = value
        return
    obj: Any = cfg
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj):
            raise NnlabError(f"{source}: unknown option {key!r}")
        names = {f.name: f for f in dataclasses.fields(obj)}
        if part not in names:
            known = ", ".join(f"{'.'.join([*parts[:i], n])}" for n in names)
            raise NnlabError(f"{source}: unknown option {key!r} (known here: {known})")
        if i == len(parts) - 1:
            hints = typing.get_type_hints(type(obj))
            setattr(obj, part, _coerce(value, hints[part], key, source))
        else:
            obj = getattr(obj, part)


def get_value(cfg: RunConfig, key: str) -> Any:
    """The value at a dotted key of the config's tables (`data.augment`)."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Convert a parsed value to the field's declared type, or fail with the option's name."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except NnlabError as e:
                errors.append(str(e))
        raise NnlabError(errors[0])
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise NnlabError(f"{source}: {key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if len(value) != len(args):
            raise NnlabError(f"{source}: {key} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise NnlabError(f"{source}: {key} must be a table, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise NnlabError(f"{source}: {key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise NnlabError(f"{source}: {key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise NnlabError(f"{source}: {key} must be a number, got {value!r}")
    if hint is str or typing.get_origin(hint) is Literal:  # a Literal's values: check_choices
        if isinstance(value, str):
            return value
        raise NnlabError(f"{source}: {key} must be a string, got {value!r}")
    return value


def check_choices(cfg: RunConfig, task_choices: dict[str, tuple[str, ...]] | None = None) -> None:
    """Reject misspelt choices early, before any data is read or any file written.
    `task_choices`: the keys only the run's task reads (`Task.choices`), with their values."""
    if not isinstance(cfg.task, str) or not cfg.task:
        raise NnlabError(f"task: expected a task name, got {cfg.task!r}")
    choices = {
        "optim.name": (cfg.optim.name, ("sgd", "muon", "adam", "adamw", "rmsprop", "adadelta")),
        "schedule.name": (
            cfg.schedule.name,
            ("constant", "step", "cosine", "warmup-linear", "plateau"),
        ),
        "train.precision": (cfg.train.precision, ("auto", "fp32", "bf16", "fp64")),
        "train.channels_last": (cfg.train.channels_last, ("auto", "on", "off")),
    }
    for key, allowed in (task_choices or {}).items():
        choices[key] = (get_value(cfg, key), allowed)
    if cfg.train.threads < 0:
        raise NnlabError(f"train.threads: must be 0 (torch's default) or more, got {cfg.train.threads}")
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise NnlabError(f"{key}: unknown value {value!r} (choose from {', '.join(allowed)})")
    positive = {
        "train.epochs": cfg.train.epochs,
        "data.batch_size": cfg.data.batch_size,
        "data.eval_batch_size": cfg.data.eval_batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise NnlabError(f"{key}: must be at least 1, got {value}")
    if cfg.optim.lr <= 0:
        raise NnlabError(f"optim.lr: must be positive, got {cfg.optim.lr}")
    if not 0 <= cfg.train.label_smoothing < 1:
        raise NnlabError(f"train.label_smoothing: must be in [0, 1), got {cfg.train.label_smoothing}")
    if cfg.data.val_size <= 0:
        raise NnlabError(f"data.val_size: must be positive, got {cfg.data.val_size}")
    for key, value in (("data.translate", cfg.data.translate), ("data.cutout", cfg.data.cutout)):
        if value < 0:
            raise NnlabError(f"{key}: must be 0 or more, got {value}")
    check_ranges(cfg)


SEED_MAX = 2**32 - 1  # numpy's and most libraries' seed range; runs derive other seeds from it
INT_MAX = 2**31 - 1  # no count in a config is larger (and numpy/torch index types hold it)
# key -> (lowest, highest) allowed, both inclusive; None: unbounded on that side
RANGES: dict[str, tuple[float | None, float | None]] = {
    "train.seed": (0, SEED_MAX), "data.split_seed": (0, SEED_MAX),
    "train.epochs": (1, 1_000_000), "data.batch_size": (1, INT_MAX), "data.eval_batch_size": (1, INT_MAX),
    "data.limit": (0, INT_MAX), "data.translate": (0, 1024), "data.cutout": (0, 1024),
    "data.embedding_words": (0, INT_MAX), "data.min_count": (0, INT_MAX),
    "data.max_word_chars": (1, 1024), "data.contextual_layers": (1, 64), "data.contextual_tune": (0, 64),
    "data.contextual_lr": (1e-12, None), "data.teacher_pairs": (0, INT_MAX),
    "data.entailment_weight": (0, None),
    "optim.lr": (1e-12, None), "optim.momentum": (0, 1), "optim.weight_decay": (0, None),
    "optim.eps": (0, 1), "optim.alpha": (0, 1), "optim.norm_lr_scale": (0, None),
    "optim.muon_lr": (0, None), "optim.muon_momentum": (0, 1),
    "schedule.warmup_epochs": (0, 1_000_000), "schedule.start_lr_ratio": (0, 1),
    "schedule.step_size": (1, INT_MAX), "schedule.gamma": (0, 1), "schedule.final_lr_ratio": (0, 1),
    "schedule.patience": (0, INT_MAX), "schedule.factor": (0, 1), "schedule.min_lr": (0, None),
    "train.grad_clip": (0, None), "train.early_stop_patience": (0, INT_MAX), "train.threads": (0, 4096),
    "train.log_every": (1, INT_MAX), "train.lookahead_start_epoch": (0, INT_MAX),
    "train.lookahead_every": (1, INT_MAX), "train.lookahead_decay": (0, 1),
}


def check_ranges(cfg: RunConfig) -> None:
    """Every number of the config finite and in its range (`RANGES`): a huge seed, a negative
    limit or a validation share past 1 is one line naming the key, before anything runs."""
    import math

    for section in ("data", "optim", "schedule", "train"):
        for f in dataclasses.fields(getattr(cfg, section)):
            key = f"{section}.{f.name}"
            value = getattr(getattr(cfg, section), f.name)
            numbers = value if isinstance(value, tuple) else (value,)
            for v in numbers:
                if isinstance(v, float) and not math.isfinite(v):
                    raise NnlabError(f"{key}: must be a finite number, got {v}")
            lo, hi = RANGES.get(key, (None, None))
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                bounds = f"from {_num(lo)} to {_num(hi)}" if lo is not None and hi is not None else (
                    f"at least {_num(lo)}" if lo is not None else f"at most {_num(hi)}")
                raise NnlabError(f"{key}: must be {bounds}, got {value}")
    if cfg.optim.betas and not all(0 <= b < 1 for b in cfg.optim.betas):
        raise NnlabError(f"optim.betas: each must be in [0, 1), got {list(cfg.optim.betas)}")
    val = cfg.data.val_size
    if val >= 1 and not float(val).is_integer():
        raise NnlabError(f"data.val_size: a share below 1 or a whole number of examples, got {val}")
    if val > INT_MAX:
        raise NnlabError(f"data.val_size: at most {INT_MAX:,} examples, got {val:g}")


def _num(v: float) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"
