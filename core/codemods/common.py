"""Parsing helpers shared by the codemods: whole modules and generated expressions parsed into
libcst trees (syntax errors become ``PatchError``), the exactly-once rule every patch obeys, and the
count of module-scope bindings that both the constant rewriter and the runner patches consult.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import libcst as cst

from arx.core.errors import PatchError

__all__ = ["ModuleBindings", "add_keyword", "dotted", "ensure_once", "excerpt", "parse_expression", "parse_source"]


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


_BOUNDARY = " ,()[]{}=:"


def excerpt(code: str, limit: int = 40) -> str:
    """``code`` on one line, cut at a token boundary (a space or punctuation) with `` ...``
    when longer than ``limit``: never inside a name, a number or a string's word."""
    text = " ".join(code.split())
    if len(text) <= limit:
        return text
    cut = max(text.rfind(ch, 0, limit) for ch in _BOUNDARY)
    if cut <= 0:
        after = [i for i in (text.find(ch, limit) for ch in _BOUNDARY) if i > 0]
        if not after:
            return text
        cut = min(after)
    head = text[:cut + 1] if text[cut] in "([{,=:" else text[:cut]
    return head.rstrip() + " ..."


def add_keyword(call: cst.Call, keyword: str, value: cst.BaseExpression, after: str) -> cst.Call:
    """``call`` with ``keyword=value`` inserted right after its ``after=`` argument, on the same
    line (what followed ``after=`` follows the new argument, in its layout)."""
    args = list(call.args)
    k = next(i for i, a in enumerate(args) if a.keyword is not None and a.keyword.value == after)
    new = cst.Arg(value=value, keyword=cst.Name(keyword),
                  equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                        whitespace_after=cst.SimpleWhitespace("")))
    if isinstance(args[k].comma, cst.Comma):  # the new argument ends as ``after=`` did
        new = new.with_changes(comma=args[k].comma)
    args[k] = args[k].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    return call.with_changes(args=[*args[:k + 1], new, *args[k + 1:]])


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
