"""Parsing helpers shared by the codemods: whole modules and generated expressions parsed into
libcst trees (syntax errors become ``PatchError``), the exactly-once rule every patch obeys, and the
count of module-scope bindings that both the constant rewriter and the runner patches consult.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import libcst as cst

from arx.core.errors import PatchError

__all__ = ["ModuleBindings", "dotted", "ensure_once", "parse_expression", "parse_source"]


def parse_source(source: str) -> cst.Module:
    """Parse a whole module; a syntax error becomes a ``PatchError`` naming the line."""
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as e:
        raise PatchError(
            f"the source does not parse (line {e.raw_line}, column {e.raw_column + 1}): {e.message}"
        ) from None


def parse_expression(text: str, module: cst.Module) -> cst.BaseExpression:
    """Parse generated expression text with the module's own parser configuration."""
    try:
        return cst.parse_expression(text, config=module.config_for_parsing)
    except cst.ParserSyntaxError as e:
        raise PatchError(f"generated code does not parse: {text!r}: {e.message}") from None


def ensure_once(counts: Mapping[str, int], wanted: Iterable[str], what: str) -> None:
    """Raise ``PatchError`` unless every wanted target was matched exactly once."""
    for key in wanted:
        n = counts.get(key, 0)
        if n != 1:
            raise PatchError(f"{what} {key!r} matched {n} times, expected exactly once")


def dotted(node: cst.BaseExpression) -> str:
    """``a.b.c`` for an attribute chain, ``f`` for a name (a call: its callee's), '' otherwise."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr.value}" if inner else ""
    if isinstance(node, cst.Call):
        return dotted(node.func)
    return ""


class ModuleBindings(cst.CSTVisitor):
    """Counts how often each name is bound in module scope (outside functions and classes).

    A constant is only safe to rewrite if its top-level assignment is its only binding: a second
    one (another assignment, one in an ``if`` block, an import, a ``for`` target) would make the
    value that the script really uses depend on more than the line arx edits. The runner patches
    use the same counts to refuse a helper class whose name the module already binds.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def _bind(self, target: cst.BaseExpression) -> None:
        if isinstance(target, cst.Name):
            self.counts[target.value] += 1
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(element.value)
        elif isinstance(target, cst.StarredElement):
            self._bind(target.value)

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._bind(target.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._bind(node.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._bind(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._bind(node.asname.name)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._bind(node.target)

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if node.name is not None:
            self._bind(node.name.name)

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        if node.asname is not None:
            self._bind(node.asname.name)
        else:
            first = node.name
            while isinstance(first, cst.Attribute):
                first = first.value
            self._bind(first)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self._bind(node.name)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self._bind(node.name)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False
