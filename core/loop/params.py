"""One parameter: what a constant of the target may become (``ParamSpec``), and from where.

``infer_spec`` guesses a range or choices from the constant's kind, value and name; ``entry_spec``
reads one ``[params.NAME]`` entry of arx.toml, merged over that guess. A spec checks and coerces
a proposed value (``ParamSpec.check``); ``ParameterSpace`` (space.py) holds one per constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from arx.core.codemods.constants import Constant
from arx.core.errors import ConfigError, ProposalError
from arx.core.loop.lockrules import name_words

__all__ = ["ENTRY_KEYS", "KINDS", "ParamSpec", "entry_spec", "infer_spec", "unwrap_toml", "value_key"]

KINDS = ("int", "float", "bool", "str", "none", "tuple", "list")
_NUMERIC = ("int", "float")
#: ints up to this are searched within a factor of two (a depth of 2 in [1, 4])
_SMALL_INT = 4
_RATIO_WORDS = ("RATIO", "FRAC", "DROPOUT", "BETA", "MOMENTUM", "PROB", "GAMMA", "LAMBDA",
                "SUBSAMPLE")
_KIND_WORDS = {
    "int": "an integer",
    "float": "a finite number",
    "bool": "True or False",
    "str": "a string",
    "none": "None",
    "tuple": "a tuple of literals",
    "list": "a list of literals",
}
ENTRY_KEYS = ("type", "value", "low", "high", "log", "pow2", "choices")


def _is_pow2(value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 1
        and (value & (value - 1) == 0)
    )


def value_key(value: object) -> object:
    """A comparison key: ints and floats compare by value, bools and containers by kind."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(value_key(v) for v in value))
    return (type(value).__name__, value)


def _freeze(value: object) -> object:
    """Lists become tuples, recursively (choices are stored hashable)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _shape(value: object, template: object) -> object:
    """``value`` (nested lists/tuples) with the container types of ``template`` where known."""
    if not isinstance(value, (list, tuple)):
        return value
    container = list if isinstance(template, list) else tuple
    subs = template if isinstance(template, (list, tuple)) and template else (None,)
    return container(_shape(v, subs[min(i, len(subs) - 1)]) for i, v in enumerate(value))


def _literal_ok(value: object) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_literal_ok(v) for v in value)
    return False



@dataclass(frozen=True)
class ParamSpec:
    """What one constant may become. Either a range (``low``/``high``) or ``choices``."""

    name: str
    #: as ``Constant.kind``
    kind: str
    #: the value at discovery (``arx init``)
    default: object
    low: float | None = None
    high: float | None = None
    #: sample and describe the range on a log scale
    log: bool = False
    #: only powers of two inside the range
    pow2: bool = False
    #: allowed values; containers are stored as tuples
    choices: tuple | None = None
    locked: bool = False

    @property
    def has_range(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def has_room(self) -> bool:
        """Whether more than one value is allowed."""
        if self.choices is not None:
            return len(self.choices) > 1
        if not self.has_range:
            return False
        if self.pow2:
            return 2 * max(self.low, 1) <= self.high  # type: ignore[type-var,operator]
        return self.low < self.high  # type: ignore[operator]

    @property
    def domain(self) -> str:
        """The allowed values in words: ``in [1, 16]``, ``one of 'L', 'SL'``, ``fixed at 3``."""
        if self.choices is not None and len(self.choices) > 1:
            return f"one of {', '.join(repr(self._shown(c)) for c in self.choices)}"
        if self.has_range:
            return f"in {self.bounds}"
        return f"fixed at {self.default!r}"

    def _shown(self, choice: object) -> object:
        """A stored choice as the target would hold it (lists for a list constant)."""
        return _shape(choice, self.default) if self.kind == "list" else choice

    @property
    def bounds(self) -> str:
        return f"[{self.low!r}, {self.high!r}]"

    def describe(self) -> str:
        """One line for prompts, e.g. ``MATRIX_LR float in [0.0005, 0.05] log``."""
        if self.choices is not None and len(self.choices) > 1:
            text = f"{self.name} {self.domain}"
        elif self.has_range:
            text = f"{self.name} {self.kind} {self.domain}"
            text += " log" if self.log else ""
            text += " power of two" if self.pow2 else ""
        else:
            text = f"{self.name} {self.kind} {self.domain} ({self.how_to_tune})"
        return text + (" (locked)" if self.locked else "")

    @property
    def how_to_tune(self) -> str:
        return f"to tune it, add `[params.{self.name}] choices = [...]` to arx.toml"

    def _refuse(self, reason: str, message: str) -> ProposalError:
        hint = self.how_to_tune if reason == "choice" and not self.has_room else self.describe()
        return ProposalError(message, reason, hint=hint)

    def coerce(self, value: object) -> object:
        """``value`` converted to this kind (3.0 -> 3 for int, list -> tuple for tuple).

        Raises ``ProposalError`` (reason 'type'); does not check the range or the choices.
        """
        kind = self.kind
        if kind == "int":
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                return int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    result = float(value)
                except OverflowError:
                    result = math.inf
                if math.isfinite(result):
                    return result
        elif kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind == "str":
            if isinstance(value, str):
                return value
        elif kind == "none":
            if value is None:
                return None
        elif kind in ("tuple", "list") and isinstance(value, (list, tuple)) and _literal_ok(value):
            template = self.default if isinstance(self.default, (list, tuple)) else ()
            shaped = _shape(value, template)
            return tuple(shaped) if kind == "tuple" else list(shaped)  # type: ignore
        what = _KIND_WORDS.get(kind, f"of kind {kind!r}")
        if self.has_range:
            what += f" {self.domain}"
        elif kind not in ("bool", "none"):
            what += f" ({self.domain})"
        raise self._refuse("type", f"{self.name} must be {what}, got {value!r}")

    def check(self, value: object) -> object:
        """The coerced value if allowed, else ``ProposalError`` (type, range or choice)."""
        value = self.coerce(value)
        if self.choices is not None:
            for choice in self.choices:
                if value_key(choice) == value_key(value):
                    return self.coerce(choice)  # the choice's own form, e.g. (1.0, 0.95)
            if len(self.choices) == 1:
                message = f"{self.name} is {self.domain} ({self.how_to_tune})"
            else:
                message = f"{self.name}={value!r} is not {self.domain}"
            raise self._refuse("choice", message)
        if self.has_range:
            if not self.low <= value <= self.high:  # type: ignore[operator]
                raise self._refuse(
                    "range", f"{self.name}={value!r} is outside the allowed range {self.bounds}"
                )
            if self.pow2 and not _is_pow2(value):
                raise self._refuse(
                    "range", f"{self.name}={value!r} is not a power of two in {self.bounds}"
                )
        return value

    def contains(self, value: object) -> bool:
        """Whether ``value`` (after the coercion ``validate`` applies) is allowed."""
        try:
            self.check(value)
        except ProposalError:
            return False
        return True


def _round(x: float) -> float:
    """Bounds to 6 significant digits so arx.toml stays readable."""
    return float(f"{x:.6g}")


def infer_spec(c: Constant, locked: bool = False) -> ParamSpec:
    """A default spec for a constant when arx.toml gives none.

    The script's own ``choices`` (argparse) when it has them; bool: both values; int from 1
    to 4: log [max(1, v//2), max(2v, 4)] (3 layers is as good a guess as 2 or 4); int power of
    two: pow2 in [v/8, 8v];
    other positive int: log [v//4, max(4v, v+4)]; 0: [0, 10]; negative
    int: [v-10, v+10]; ratio-like float in (0, 1]: [0, 1]; other positive float: log
    [v/10, 10v]; 0.0: [0, 1]; negative float: [10v, 0]; str, tuple, list, None: fixed at the
    current value until arx.toml lists ``choices``. A positive value whose name says it is a
    minimum (``min_samples_split``) never goes below the original.
    """
    spec = ParamSpec(name=c.name, kind=c.kind, default=c.value, locked=locked)
    v: Any = c.value
    if c.choices and any(value_key(x) == value_key(v) for x in c.choices):
        return replace(spec, choices=tuple(_freeze(x) for x in c.choices))
    if c.kind == "bool":
        return replace(spec, choices=(False, True))
    floor = "min" in name_words(c.name) and isinstance(v, (int, float)) and v > 0
    if c.kind == "int":
        if 0 < v <= _SMALL_INT:  # a depth of 2 or 3 heads: a few steps either way, not 16x
            return replace(spec, low=v if floor else max(1, v // 2), high=max(2 * v, 4),
                           log=True)
        if v >= 2 and _is_pow2(v):
            return replace(spec, low=v if floor else max(1, v // 8), high=v * 8, pow2=True)
        if v > 0:
            return replace(spec, low=v if floor else max(1, v // 4), high=max(v * 4, v + 4),
                           log=True)
        if v == 0:
            return replace(spec, low=0, high=10)
        return replace(spec, low=v - 10, high=v + 10)
    if c.kind == "float":
        if 0 < v <= 1 and any(word in c.name.upper() for word in _RATIO_WORDS):
            return replace(spec, low=v if floor else 0.0, high=1.0)
        if v > 0:
            return replace(spec, low=v if floor else _round(v / 10), high=_round(v * 10),
                           log=True)
        if v == 0:
            return replace(spec, low=0.0, high=1.0)
        return replace(spec, low=_round(10 * v), high=0.0)
    return replace(spec, choices=(_freeze(v),))


def entry_spec(
    key: str, entry: Mapping[str, Any], constant: Constant | None, locked: bool
) -> ParamSpec:
    """The spec of one ``[params.KEY]`` entry, merged over inference. Raises ConfigError."""
    where = f"arx.toml [params.{key}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table, got {entry!r}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {', '.join(unknown)}",
            hint=f"allowed keys: {', '.join(ENTRY_KEYS)}",
        )
    kind = unwrap_toml(entry["type"]) if "type" in entry else None
    if kind is None:
        kind = constant.kind if constant is not None else _kind_of(entry.get("value"))
    if kind is None:
        raise ConfigError(f"{where} needs a type", hint=f"use one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise ConfigError(f"{where} has type {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    if constant is not None and constant.kind != kind:
        raise ConfigError(
            f"{where} says type {kind!r} but {key} = {constant.source} in the target is "
            f"{constant.kind!r}",
            hint=f'set type = "{constant.kind}" or change the constant in the target',
        )
    probe = ParamSpec(key, str(kind), None)
    if constant is not None:
        default = constant.value
    elif "value" in entry:
        try:
            default = probe.coerce(unwrap_toml(entry["value"]))
        except ProposalError:
            raise ConfigError(
                f"{where}: value {unwrap_toml(entry['value'])!r} is not a {kind}"
            ) from None
    elif kind == "none":
        default = None
    else:
        raise ConfigError(f"{where} needs a value", hint="run `arx init` to rewrite arx.toml")
    probe = replace(probe, default=default)
    domain = {
        k: unwrap_toml(entry[k]) for k in ("low", "high", "log", "pow2", "choices") if k in entry
    }
    if not domain:  # nothing said about the domain: infer it
        return replace(
            infer_spec(Constant(key, default, kind, repr(default), None, 0, None)), locked=locked
        )
    if "choices" in domain:
        if set(domain) != {"choices"}:
            raise ConfigError(f"{where} gives both choices and a range", hint="keep one of them")
        raw = domain["choices"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where}: choices must be a non-empty array")
        try:
            choices = tuple(_freeze(probe.coerce(c)) for c in raw)
        except ProposalError as e:
            raise ConfigError(f"{where}: a choice is not a {kind}: {e.message}") from None
        return replace(probe, choices=choices, locked=locked)
    if kind not in _NUMERIC:
        raise ConfigError(f"{where}: a {kind} takes choices, not low/high", hint=probe.how_to_tune)
    if "low" not in domain or "high" not in domain:
        raise ConfigError(f"{where} needs both low and high")
    try:
        low, high = probe.coerce(domain["low"]), probe.coerce(domain["high"])
    except ProposalError as e:
        raise ConfigError(f"{where}: low and high must be {kind}s: {e.message}") from None
    log, pow2 = domain.get("log", False), domain.get("pow2", False)
    if not isinstance(log, bool) or not isinstance(pow2, bool):
        raise ConfigError(f"{where}: log and pow2 must be true or false")
    if low > high:  # type: ignore[operator]
        raise ConfigError(f"{where}: low ({low!r}) is greater than high ({high!r})")
    if log and low <= 0:  # type: ignore[operator]
        raise ConfigError(f"{where}: log = true needs low > 0, got {low!r}")
    if pow2 and (kind != "int" or not (_is_pow2(low) and _is_pow2(high))):
        raise ConfigError(
            f"{where}: pow2 = true needs an int whose low and high are powers of two, "
            f"got [{low!r}, {high!r}]"
        )
    return replace(probe, low=low, high=high, log=log, pow2=pow2, locked=locked)


def _kind_of(value: object) -> str | None:
    value = unwrap_toml(value)
    if isinstance(value, list):
        return "tuple"  # TOML has only arrays; a tuple is the common case for constants
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return kind
    return None


def unwrap_toml(value: object) -> object:
    """tomlkit items (String, Integer, Array, ...) as plain Python values."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value
