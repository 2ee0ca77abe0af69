"""``[params] constraints``: conditions every configuration must meet, checked before a trial.

A constraint is a Python-like expression over parameter names, e.g. ``n_embd % n_head == 0`` or
``Args.num_minibatches <= Args.num_envs * 4``. It is parsed with ``ast`` and evaluated by walking
the tree over a whitelist (numbers, strings, names, arithmetic, comparisons, ``and``/``or``/
``not``, tuples, and ``abs``/``min``/``max``/``round``/``int``/``float``/``len``); nothing is ever
passed to ``eval``. A name is a parameter's name, or for names that are not Python identifiers
(``--n-head``) the argparse destination (``n_head``), or the last part of a dotted name when it
is unique (``n_head`` for ``config.n_head``, ``config.py:n_head``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from arx.core.errors import ConfigError, close_hint

__all__ = ["Constraint", "ConstraintFailed", "parse_constraints"]

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "min": min, "max": max, "round": round, "int": int, "float": float, "len": len,
}
_MAX_EXPONENT = 64


class ConstraintFailed(Exception):
    """A constraint could not be evaluated (division by zero, a type error, ...)."""


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _resolve(ref: str, names: Collection[str]) -> str | None:
    if ref in names:
        return ref
    dests = [n for n in names if n.startswith("-") and n.lstrip("-").replace("-", "_") == ref]
    if len(dests) == 1:
        return dests[0]
    tails = [n for n in names  # config.py:LR and conf/c.yaml:optim.lr: after the file's colon
             if n.rpartition(":")[2].rsplit(".", 1)[-1].lstrip("-").replace("-", "_") == ref]
    return tails[0] if len(tails) == 1 else None


@dataclass(frozen=True)
class Constraint:
    """One parsed constraint: its text, its tree, and the parameters its names stand for."""

    text: str
    tree: ast.Expression
    #: name as written -> parameter name
    refs: Mapping[str, str]

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the configuration ``values`` meets it; ``ConstraintFailed`` when it cannot
        be evaluated."""
        try:
            return bool(self._eval(self.tree.body, values))
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise ConstraintFailed(f"{self.text!r} cannot be evaluated: {exc}") from None

    def _eval(self, node: ast.AST, values: Mapping[str, Any]) -> Any:
        ev = self._eval
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool,
                                                                      type(None))):
            return node.value
        ref = _dotted(node)
        if ref is not None:
            return values[self.refs[ref]]
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(ev(e, values) for e in node.elts)
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left, values), ev(node.right, values)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
                raise ValueError("exponent too large")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand, values)
            return {ast.USub: operator.neg, ast.UAdd: operator.pos,
                    ast.Not: operator.not_}[type(node.op)](value)
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(ev(v, values) for v in node.values)
            return any(ev(v, values) for v in node.values)
        if isinstance(node, ast.Compare):
            left = ev(node.left, values)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node, values)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Call):
            return _FUNCTIONS[node.func.id](*(ev(a, values) for a in node.args))  # type: ignore[attr-defined]
        raise ValueError(f"unsupported expression {type(node).__name__}")  # checked at parse


def _check_tree(node: ast.AST, text: str) -> None:
    """Refuse anything outside the whitelist, naming it."""
    allowed = (ast.Expression, ast.Constant, ast.Name, ast.Attribute, ast.Tuple, ast.List,
               ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Load, ast.And,
               ast.Or, ast.Not, ast.USub, ast.UAdd, *_BINARY, *_COMPARE)
    for sub in ast.walk(node):
        if not isinstance(sub, allowed):
            raise ConfigError(f"[params] constraint {text!r} uses {type(sub).__name__}, "
                              "which constraints do not allow",
                              hint="use names, numbers, arithmetic, comparisons, and/or/not")
        if isinstance(sub, ast.Call) and (not isinstance(sub.func, ast.Name)
                                          or sub.func.id not in _FUNCTIONS or sub.keywords):
            raise ConfigError(f"[params] constraint {text!r} calls something other than "
                              f"{', '.join(_FUNCTIONS)}")
        if isinstance(sub, ast.Constant) and not isinstance(sub.value, (int, float, str, bool,
                                                                         type(None))):
            raise ConfigError(f"[params] constraint {text!r} holds a {type(sub.value).__name__}")


def _refs(node: ast.AST, out: set[str]) -> None:
    ref = _dotted(node)
    if ref is not None:
        out.add(ref)
        return
    for child in ast.iter_child_nodes(node):
        if isinstance(node, ast.Call) and child is node.func:
            continue
        _refs(child, out)


def parse_constraints(raw: object, names: Collection[str]) -> tuple[Constraint, ...]:
    """The constraints of ``[params] constraints`` (an array of strings) over the parameter
    ``names``; a ``ConfigError`` naming the problem otherwise."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise ConfigError("[params] constraints in arx.toml must be an array of strings",
                          hint='e.g. constraints = ["n_embd % n_head == 0"]')
    out = []
    for text in raw:
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConfigError(f"[params] constraint {text!r} does not parse: {exc.msg}") from None
        _check_tree(tree, text)
        found: set[str] = set()
        _refs(tree.body, found)
        refs = {}
        for ref in sorted(found):
            name = _resolve(ref, names)
            if name is None:
                raise ConfigError(f"[params] constraint {text!r} names {ref}, which is not a "
                                  f"parameter (or is ambiguous){close_hint(ref, names)}")
            refs[ref] = name
        out.append(Constraint(text.strip(), tree, refs))
    return tuple(out)


def first_unmet(constraints: tuple[Constraint, ...], values: Mapping[str, Any]) -> str | None:
    """Why ``values`` is refused (the first unmet constraint, with the values it read), or None."""
    for c in constraints:
        try:
            ok = c.holds(values)
        except ConstraintFailed as exc:
            return str(exc)
        if not ok:
            shown = ", ".join(f"{ref}={_show(values[name])}" for ref, name in c.refs.items())
            return f"the constraint {c.text!r} does not hold ({shown})"
    return None


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else repr(value)
