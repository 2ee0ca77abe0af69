"""Where an argparse setting is read only under a condition on another one.

word_language_model reads ``args.nhead`` only under ``if args.model == "Transformer":``; when
``--model`` is fixed at "LSTM", tuning ``--nhead`` can change nothing (a wasted trial).
``argparse_guards`` gives, for each option, the conditions in effect at each place the script
reads it (``X.dest`` anywhere, inside ``if``/``elif``/``else`` and ``a if c else b``); ``arx
init`` locks an option when every read sits under a condition that a fixed option fails.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import libcst as cst

from arx.core.codemods.values import NotConstant, evaluate

__all__ = ["Condition", "argparse_guards"]


@dataclass(frozen=True)
class Condition:
    """``option`` is (``holds``) or is not (not ``holds``) one of ``values``."""

    option: str
    values: tuple
    holds: bool
    line: int

    def met_by(self, value: object) -> bool:
        return (value in self.values) == self.holds

    def describe(self) -> str:
        shown = repr(self.values[0]) if len(self.values) == 1 else \
            "one of " + ", ".join(repr(v) for v in self.values)
        return f"{self.option} {'is' if self.holds else 'is not'} {shown} (line {self.line})"


class _Reads(cst.CSTVisitor):
    def __init__(self, dests: Mapping[str, str], line_of) -> None:
        super().__init__()
        self.dests = dests
        self.line_of = line_of
        self.stack: list[Condition | None] = []
        self.reads: dict[str, list[tuple[Condition, ...]]] = defaultdict(list)

    def _condition(self, test: cst.BaseExpression) -> Condition | None:
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1
                and isinstance(test.left, cst.Attribute)
                and test.left.attr.value in self.dests):
            return None
        target = test.comparisons[0]
        try:
            value = evaluate(target.comparator)
        except NotConstant:
            return None
        op = target.operator
        if isinstance(op, (cst.Equal, cst.NotEqual)):
            values = (value,)
        elif isinstance(op, (cst.In, cst.NotIn)) and isinstance(value, (tuple, list)):
            values = tuple(value)
        else:
            return None
        holds = isinstance(op, (cst.Equal, cst.In))
        return Condition(self.dests[test.left.attr.value], values, holds, self.line_of(test))

    def _branch(self, test, body, orelse) -> None:
        test.visit(self)
        cond = self._condition(test)
        self.stack.append(cond)
        body.visit(self)
        self.stack.pop()
        if orelse is not None:
            self.stack.append(None if cond is None else
                              Condition(cond.option, cond.values, not cond.holds, cond.line))
            orelse.visit(self)
            self.stack.pop()

    def visit_If(self, node: cst.If) -> bool:
        self._branch(node.test, node.body, node.orelse)
        return False

    def visit_IfExp(self, node: cst.IfExp) -> bool:
        self._branch(node.test, node.body, node.orelse)
        return False

    def visit_Attribute(self, node: cst.Attribute) -> None:
        option = self.dests.get(node.attr.value)
        if option is not None:
            self.reads[option].append(tuple(c for c in self.stack if c is not None))


def argparse_guards(module: cst.Module, dests: Mapping[str, str],
                    line_of) -> dict[str, tuple[tuple[Condition, ...], ...]]:
    """Option -> the conditions in effect at each of its reads (``dests``: dest -> option)."""
    visitor = _Reads(dests, line_of)
    module.visit(visitor)
    return {option: tuple(reads) for option, reads in visitor.reads.items()}
