"""`--space KEY=DIST(ARGS)`: the settings a recipe search varies, parsed and checked against
the config before anything trains.

    optim.lr=loguniform(1e-4,1e-1)     a float, log-uniform (low > 0)
    model.dropout=uniform(0,0.5)        a float, uniform
    model.hidden=int(32,256)            an integer, uniform; logint(8,512) log-uniform
    optim.name=choice(adam,sgd)         one of the listed values (of the setting's own type)

Every key must be a setting of the run's config (or an option of its model), every bound a
value the setting accepts (`optim.momentum=uniform(0,2)` fails: momentum is at most 1), and
every choice a valid value (`optim.name=choice(adam,foo)` fails): each mistake is one line
naming the parameter.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

from nnlab import config as config_mod
from nnlab.config import RunConfig
from nnlab.errors import NnlabError, short

SPEC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([a-z]+)\s*\((.*)\)\s*$", re.S)
KINDS = ("uniform", "loguniform", "int", "logint", "choice")


@dataclass(frozen=True)
class Param:
    key: str  # the dotted config key (`optim.lr`, `model.args.dropout`)
    kind: str  # one of KINDS
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        """Optuna's distribution for this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind in ("int", "logint"):
            return IntDistribution(int(self.low), int(self.high), log=self.kind == "logint")
        return FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key}=choice({','.join(map(str, self.choices))})"
        return f"{self.key}={self.kind}({self.low:g},{self.high:g})"


def _literal(text: str) -> Any:
    """`1e-4` -> 0.0001, `adam` -> 'adam', `true` -> True (as `--set` reads values)."""
    return config_mod.parse_assignment(f"x={text.strip()}")[1]


def canonical_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "model" and len(parts) >= 2 and parts[1] not in ("name", "args"):
        return ".".join(["model", "args", *parts[1:]])  # as --set reads `model.dropout`
    return key


def parse_space(specs: list[str], base: RunConfig, check: Any) -> list[Param]:
    """Each `--space` spec as a Param, checked by applying its bounds or choices to a copy of
    `base` and calling `check(cfg)` (the full validation a run's config gets)."""
    if not specs:
        raise NnlabError("--space: give at least one, e.g. --space 'optim.lr=loguniform(1e-4,1e-1)'")
    params: list[Param] = []
    for spec in specs:
        m = SPEC.match(spec)
        if not m:
            raise NnlabError(f"--space {short(spec, 80)!r}: expected KEY=DIST(ARGS), DIST one of "
                             f"{', '.join(KINDS)}")
        key, kind, inner = canonical_key(m[1]), m[2], m[3]
        if kind not in KINDS:
            raise NnlabError(f"--space {m[1]}: unknown distribution {kind!r} (one of {', '.join(KINDS)})")
        args = inner.split(",") if inner.strip() else []
        if kind == "choice":
            if len(args) < 2:
                raise NnlabError(f"--space {m[1]}: choice() needs at least two values")
            values = tuple(_literal(a) for a in args)
            if len(set(map(repr, values))) != len(values):
                raise NnlabError(f"--space {m[1]}: a choice listed twice")
            for value in values:
                _try(base, key, value, m[1], check)
            param = Param(key, kind, choices=tuple(_typed(base, key, v) for v in values))
        else:
            if len(args) != 2:
                raise NnlabError(f"--space {m[1]}: {kind}() takes two bounds, low and high")
            try:
                low, high = (float(_literal(a)) for a in args)
            except (TypeError, ValueError):
                raise NnlabError(f"--space {m[1]}: bounds must be numbers, got {inner!r}") from None
            if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
                raise NnlabError(f"--space {m[1]}: needs finite bounds with low < high, got "
                                 f"{low:g}, {high:g}")
            if kind.startswith("log") and low <= 0:
                raise NnlabError(f"--space {m[1]}: {kind}() needs low > 0, got {low:g}")
            if kind in ("int", "logint") and not (low.is_integer() and high.is_integer()):
                raise NnlabError(f"--space {m[1]}: {kind}() needs whole-number bounds")
            for bound in (low, high):
                _try(base, key, int(bound) if kind in ("int", "logint") else bound, m[1], check)
            param = Param(key, kind, low, high)
        if any(p.key == key for p in params):
            raise NnlabError(f"--space {m[1]}: given twice")
        params.append(param)
    return params


def _typed(base: RunConfig, key: str, value: Any) -> Any:
    cfg = copy.deepcopy(base)
    config_mod.set_value(cfg, key, value, "--space")
    return _get(cfg, key)


def _get(cfg: RunConfig, key: str) -> Any:
    if key.startswith("model.args."):
        return cfg.model.args.get(key.split(".", 2)[2])
    return config_mod.get_value(cfg, key)


def _try(base: RunConfig, key: str, value: Any, name: str, check: Any) -> None:
    """Apply `value` to a copy of the config and validate it whole; one line naming `name`."""
    cfg = copy.deepcopy(base)
    try:
        config_mod.set_value(cfg, key, value, "--space")
        check(cfg)
    except NnlabError as e:
        raise NnlabError(f"--space {name}: {value!r} is not a value it takes ({e})") from None


def apply(base: RunConfig, params: dict[str, Any]) -> RunConfig:
    """`base` with a trial's values set."""
    cfg = copy.deepcopy(base)
    for key, value in params.items():
        config_mod.set_value(cfg, key, value, "trial")
    return cfg


def toml_value(value: Any) -> Any:
    """A config value as TOML holds it: tuples as arrays; None is left out by the caller."""
    if isinstance(value, tuple):
        return [toml_value(v) for v in value]
    if isinstance(value, dict):
        return {k: toml_value(v) for k, v in value.items() if v is not None}
    return value
