"""The parameter space: which constants may be proposed, and which values they may take.

A ``ParamSpec`` (params.py) is inferred from each discovered ``Constant`` and overridden by the
``[params]`` table of arx.toml (``ParameterSpace.from_toml``); ``to_toml`` writes the table
back with tomlkit, updating an existing table in place so the user's comments survive.
``ParameterSpace.validate`` is the one gate every proposal passes before it touches the target,
``[params] constraints`` included (constraints.py). ``run_space`` is the space a run searches:
arx.toml's, with the budget, steps and seed constants of ``[target]`` locked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tomlkit

from arx.core.codemods.constants import CONSTANT, Constant, scan_parameters
from arx.core.config import RunConfig, load_toml, plain
from arx.core.errors import ConfigError, ProposalError, close_hint
from arx.core.loop.constraints import Constraint, first_unmet, parse_constraints
from arx.core.loop.params import (
    ENTRY_KEYS,
    ParamSpec,
    entry_spec,
    infer_spec,
    unwrap_toml,
    value_key,
)

__all__ = ["ParameterSpace", "run_space"]
#: keys of ``[params]`` that are not parameters
_RESERVED = ("locked", "constraints")


def _toml_ok(value: object) -> bool:
    """TOML has no null: a value holding None cannot be written."""
    if isinstance(value, (list, tuple)):
        return all(_toml_ok(v) for v in value)
    return value is not None


def _toml_value(value: object) -> object:
    """A value as TOML can store it: tuples become (nested) arrays."""
    if isinstance(value, (list, tuple)):
        return [_toml_value(v) for v in value]
    return value


class ParameterSpace:
    """The specs of all constants of the target, by name, in order of appearance."""

    def __init__(self, specs: Iterable[ParamSpec], constraints: Sequence[Constraint] = ()):
        table: dict[str, ParamSpec] = {}
        for spec in specs:
            if spec.name in table:
                raise ConfigError(f"parameter {spec.name} is defined twice")
            table[spec.name] = spec
        self.specs: Mapping[str, ParamSpec] = MappingProxyType(table)
        self.constraints: tuple[Constraint, ...] = tuple(constraints)

    @classmethod
    def from_constants(
        cls, constants: Iterable[Constant], locked: Collection[str] = ()
    ) -> ParameterSpace:
        """A space inferred from the constants alone (what ``arx init`` writes)."""
        return cls(infer_spec(c, locked=c.name in locked) for c in constants)

    def __repr__(self) -> str:
        return f"ParameterSpace({list(self.specs.values())!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ParameterSpace) and dict(self.specs) == dict(other.specs)
                and [c.text for c in self.constraints] == [c.text for c in other.constraints])

    def names(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def defaults(self) -> dict[str, object]:
        return {name: spec.default for name, spec in self.specs.items()}

    def tunable(self, frozen: Collection[str] = ()) -> tuple[ParamSpec, ...]:
        """Specs a proposal may change: not locked, not frozen, more than one allowed value."""
        return tuple(
            s for s in self.specs.values() if not s.locked and s.name not in frozen and s.has_room
        )

    def with_locked(self, names: Iterable[str], locked: bool = True) -> ParameterSpace:
        """A copy with ``names`` locked (or unlocked with ``locked=False``)."""
        names = list(names)
        for name in names:
            if name not in self.specs:
                raise ConfigError(
                    f"cannot lock {name}: not a parameter of the target"
                    f"{close_hint(name, self.specs)}"
                )
        return ParameterSpace(
            (replace(s, locked=locked) if s.name in names else s for s in self.specs.values()),
            self.constraints,
        )

    def validate(
        self,
        changes: Mapping[str, object],
        current: Mapping[str, object],
        frozen: Collection[str] = (),
    ) -> dict[str, object]:
        """The changes, coerced to each constant's kind, minus those equal to ``current``.

        Raises ``ProposalError`` with ``reason`` one of: empty, unknown, locked, frozen, type,
        range, choice, noop (every value equals the current one), constraint (the new
        configuration breaks ``[params] constraints``). Checks in proposal order and refuses at
        the first problem.
        """
        if not changes:
            raise ProposalError(
                "the proposal changes nothing", "empty", hint="give at least one {NAME: value}"
            )
        result: dict[str, object] = {}
        for name, value in changes.items():
            spec = self.specs.get(name)
            if spec is None:
                raise ProposalError(
                    f"{name} is not a constant of the target{close_hint(name, self.specs)}",
                    "unknown",
                    hint=f"tunable: {', '.join(s.name for s in self.tunable(frozen))}",
                )
            if spec.locked:
                raise ProposalError(
                    f"{name} is locked and may not be changed",
                    "locked",
                    hint=f"remove {name} from `[params] locked` in arx.toml to tune it",
                )
            if name in frozen:
                raise ProposalError(
                    f"{name} is frozen by the current search strategy",
                    "frozen",
                    hint="change one of the active parameters",
                )
            coerced = spec.check(value)
            if value_key(coerced) != value_key(current.get(name, spec.default)):
                result[name] = coerced
        if not result:
            listed = ", ".join(f"{n}={current.get(n, self.specs[n].default)!r}" for n in changes)
            raise ProposalError(
                f"the proposal only repeats the current values ({listed})",
                "noop",
                hint="propose a value different from the current one",
            )
        if self.constraints:
            unmet = first_unmet(self.constraints, {**self.defaults(), **current, **result})
            if unmet is not None:
                raise ProposalError(
                    f"the proposal breaks a constraint: {unmet}", "constraint",
                    hint="constraints: " + "; ".join(c.text for c in self.constraints),
                )
        return result

    # -- arx.toml ------------------------------------------------------------------------------

    @classmethod
    def from_toml(
        cls, table: Mapping[str, Any] | None, constants: Sequence[Constant] | None = None,
        skipped: Mapping[str, str] | None = None,
    ) -> ParameterSpace:
        """The space of ``[params]`` (a tomlkit or tomllib table), merged over inference.

        With ``constants`` (the target's parameters, as discovered), each top-level constant
        without an entry is inferred, a parameter of another surface (``--lr``, ``Args.lr``,
        ``params.lr``) takes part only when the table names it (``arx init`` writes them all;
        tables written before those surfaces existed keep their space), and an entry naming
        no parameter is a ``ConfigError``; without them, the table alone defines the space and
        ``value`` gives the defaults. ``[params.Args.lr]`` (a nested table) reads as
        ``[params."Args.lr"]``. ``skipped`` (name -> why, from ``scan_parameters``) explains
        an entry that names a value arx cannot rewrite.
        """
        why = {k: f" ({v})" for k, v in (skipped or {}).items()}
        table = _flatten(dict(table or {}))
        locked_raw = unwrap_toml(table.pop("locked", []))
        if not isinstance(locked_raw, list) or not all(isinstance(n, str) for n in locked_raw):
            raise ConfigError("[params] locked in arx.toml must be an array of names")
        raw_constraints = unwrap_toml(table.pop("constraints", None))
        locked = set(locked_raw)
        if constants is None:
            specs = [entry_spec(k, e, None, k in locked) for k, e in table.items()]
        else:
            by_name = {c.name: c for c in constants}
            for key in table:
                if key not in by_name:
                    raise ConfigError(
                        f"[params.{key}] in arx.toml names no parameter of the target"
                        f"{why.get(key) or close_hint(key, by_name)}",
                        hint=f"remove [params.{key}] or add a top-level `{key} = ...`",
                    )
            specs = [
                entry_spec(c.name, table[c.name], c, c.name in locked)
                if c.name in table
                else infer_spec(c, locked=c.name in locked)
                for c in constants
                if c.surface == CONSTANT or c.name in table or c.name in locked
            ]
        names = {s.name for s in specs}
        for name in sorted(locked - names):
            raise ConfigError(
                f"[params] locked in arx.toml names {name}, which is not a parameter"
                f"{why.get(name) or close_hint(name, names)}"
            )
        return cls(specs, parse_constraints(raw_constraints, names))

    def to_toml(self, into: Any = None) -> Any:
        """The ``[params]`` table as tomlkit.

        ``into`` (an existing tomlkit table) is updated in place and returned: only values
        that changed are rewritten, so comments and formatting elsewhere survive.
        """
        table = into if into is not None else tomlkit.table()
        for word in _RESERVED:
            if word in self.specs:
                raise ConfigError(f"a constant named {word!r} clashes with `[params] {word}`")
        _set(table, "locked", [s.name for s in self.specs.values() if s.locked])
        if self.constraints:
            _set(table, "constraints", [c.text for c in self.constraints])
        for name in [k for k in table if k not in _RESERVED and k not in self.specs]:
            del table[name]
        for spec in self.specs.values():
            if spec.name not in table:
                table[spec.name] = tomlkit.table()
            entry = table[spec.name]
            wanted: dict[str, object] = {"type": spec.kind}
            if _toml_ok(spec.default):
                wanted["value"] = spec.default
            if spec.choices is not None:
                if all(_toml_ok(c) for c in spec.choices):
                    wanted["choices"] = list(spec.choices)
            elif spec.has_range:
                wanted.update(low=spec.low, high=spec.high)
                if spec.log:
                    wanted["log"] = True
                if spec.pow2:
                    wanted["pow2"] = True
            for key in [k for k in entry if k not in wanted]:
                del entry[key]
            for key, value in wanted.items():
                _set(entry, key, value)
        return table


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"Args": {"lr": {...}}}`` (what ``[params.Args.lr]`` parses to) as ``{"Args.lr": ...}``:
    a table holding no entry key but only tables is a name prefix."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        inner = unwrap_toml(value)
        if (not prefix and key in _RESERVED) or not isinstance(inner, Mapping) or not inner \
                or any(k in ENTRY_KEYS for k in inner) \
                or not all(isinstance(unwrap_toml(v), Mapping) for v in inner.values()):
            out[name] = value
        else:
            out.update(_flatten(dict(inner), f"{name}."))
    return out


def run_space(tree: Path, target_source: str, config: RunConfig) -> ParameterSpace:
    """The space a run searches: ``[params]`` of arx.toml in ``tree`` over the target's
    parameters, with the budget, steps and seed constants of ``[target]`` locked whatever
    ``[params]`` says (arx sets them itself). Runs started before this rule (``config.rules``
    1) keep arx.toml's locks, so they resume and replay as they ran."""
    scan = scan_parameters(target_source, config.target.file)
    space = ParameterSpace.from_toml(plain(load_toml(tree).get("params", {})), scan.found,
                                     {s.name: f"line {s.line}: {s.reason}" for s in scan.skipped})
    if config.rules < 2:
        return space
    managed = [n for n in config.target.managed_constants() if n in space.specs]
    return space.with_locked(managed) if managed else space


def _set(table: Any, key: str, value: object) -> None:
    """Set ``table[key]`` unless it already holds an equal value (keeps the user's spelling)."""
    if key in table and value_key(unwrap_toml(table[key])) == value_key(value):
        return
    table[key] = _toml_value(value)

