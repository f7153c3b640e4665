"""Models are registered by name (as in timm), so configs name them by string.

An entry is a function or a model class, plus the defaults that make the named variant
(`cell="lstm", crf=True`): its options are read from the function's or the class's
`__init__` signature, so a model's options are declared once, where they are used. Each
entry also carries the model's *recipe*: the training settings its source used (optimiser,
learning rate, batch size, epochs), applied as config defaults before the user's own config
and `--set` overrides.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nnlab.errors import NnlabError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    fn: Callable[..., nn.Module]  # a function or an nn.Module class
    description: str
    recipe: dict[str, Any] = field(default_factory=dict)  # dotted config keys -> values
    defaults: dict[str, Any] = field(default_factory=dict)  # options fixed for this variant
    reads: str = "words"  # text models: "words" (the run's vocabulary) or "wordpieces" (MiniLM's)
    conv: bool = False  # a convolution net: bf16 and channels-last where the CPU has native bf16


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, task: str, description: str, recipe: dict[str, Any] | None = None,
             reads: str = "words", conv: bool = False, **defaults: Any):
    """Register `fn` (a function or class) as `name`; `defaults` replace its own option
    defaults for this variant (the user may still override them with `model.*`). `reads`:
    what a text model takes as input ids, the run's word vocabulary or a pretrained
    encoder's word pieces. `conv`: a convolution net, which the run's device choice gives
    bf16 and channels-last where the CPU has native bf16 (`device.make_runtime`)."""
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        unknown = set(defaults) - set(inspect.signature(fn).parameters)
        if unknown:
            raise ValueError(f"model {name!r}: {fn.__name__} has no option {sorted(unknown)}")
        _REGISTRY[name] = ModelEntry(name, task, fn, description, dict(recipe or {}), defaults, reads,
                                     conv)
        return fn

    return wrap


def unregister(name: str) -> None:
    """Forget a model (tests that register their own)."""
    _REGISTRY.pop(name, None)


# optional extras some models need (a study variant's `requires`): name -> a check that
# raises NnlabError, one line naming the install, when the extra is absent
EXTRAS: dict[str, Callable[[], Any]] = {}


def register_extra(name: str, check: Callable[[], Any]) -> None:
    EXTRAS[name] = check


def check_extra(name: str) -> None:
    """Raise NnlabError (one line) when the optional extra `name` is not installed."""
    EXTRAS[name]()


def get(name: str, task: str | None = None) -> ModelEntry:
    entry = _REGISTRY.get(name)
    if entry is None or (task is not None and entry.task != task):
        known = names(task)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
        where = f" for task {task!r}" if task else ""
        raise NnlabError(f"--model {name}: unknown model{where}{hint}")
    return entry


def is_conv(name: str) -> bool:
    """Whether `name` is a registered convolution net (an unknown name is not: the error about
    it comes where the model is built, naming the run's config)."""
    entry = _REGISTRY.get(name)
    return entry is not None and entry.conv


def names(task: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def options(name: str, fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model's keyword options and their defaults (the variant's own where it fixes
    one), except those the task supplies."""
    entry = get(name)
    sig = inspect.signature(entry.fn)
    return {
        p.name: entry.defaults.get(p.name, p.default)
        for p in sig.parameters.values()
        if p.name not in fixed and p.default is not inspect.Parameter.empty
    }


# options that count something (layer sizes, widths, dimensions): at least 1 each
SIZES = ("hidden_sizes", "widths", "word_dim", "mlp_hidden")


def check_args(name: str, task: str, args: dict[str, Any], supplied: tuple[str, ...] = ()
               ) -> dict[str, Any]:
    """`args` checked against the model's options (names, types, ranges) without building it,
    so a bad `--set model.x=...` fails before any data is read. Returns them normalised."""
    get(name, task)
    allowed = options(name, supplied)
    for key, value in args.items():
        if key not in allowed:
            known = ", ".join(f"model.{k}" for k in allowed) or "none"
            raise NnlabError(f"model.{key}: unknown option for {name} (options: {known})")
        default = allowed[key]
        if isinstance(default, tuple) and isinstance(value, list):
            args = {**args, key: tuple(value)}  # TOML and --set write sequences as lists
            value = args[key]
        if default is not None and not isinstance(value, type(default)) and not (
            isinstance(default, float | tuple) and isinstance(value, int | float)
            and not isinstance(value, bool)  # a number for a per-layer tuple: every layer
        ):
            raise NnlabError(
                f"model.{key}: expected {type(default).__name__} for {name}, got {value!r}"
            )
        if isinstance(default, tuple) and not isinstance(value, tuple):
            args = {**args, key: (value,) * max(1, len(default))}  # a number: every layer
            value = args[key]
        _check_range(key, value)
    return args


def _check_range(key: str, value: Any) -> None:
    values = list(value) if isinstance(value, tuple | list) else [value]
    if key == "dropout" and not all(isinstance(p, int | float) and 0 <= p < 1 for p in values):
        raise NnlabError(f"model.dropout: each rate must be in [0, 1), got {value!r}")
    if key in SIZES and not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                for n in values):
        raise NnlabError(f"model.{key}: each size must be a whole number of at least 1, got {value!r}")
    if key.endswith("_epochs") and not (isinstance(value, int) and value >= 0):
        raise NnlabError(f"model.{key}: must be a whole number of 0 or more, got {value!r}")


def create(name: str, task: str, args: dict[str, Any], **supplied: Any) -> nn.Module:
    """Build a model; `args` are user options (checked by name), `supplied` come from data."""
    entry = get(name, task)
    args = check_args(name, task, args, tuple(supplied))
    return entry.fn(**supplied, **{**entry.defaults, **args})
