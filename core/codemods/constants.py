"""Level 1's patches: the target's constants, found and rewritten with libcst.

A constant is a top-level ``NAME = literal`` assignment bound exactly once in module scope
(``discover_constants`` finds them); ``apply_changes`` rewrites their values and nothing else, each
name matched exactly once, and reads the result back to check that every value round-trips.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

from arx.core.codemods.common import (
    ModuleBindings,
    ensure_once,
    parse_expression,
    parse_source,
)
from arx.core.codemods.values import NotConstant, evaluate, kind_of, render_value
from arx.core.errors import PatchError, close_hint

__all__ = ["Constant", "ConstantTransformer", "apply_changes", "discover_constants"]


@dataclass(frozen=True)
class Constant:
    """A top-level ``NAME = literal`` assignment of the target: what a proposal may change."""

    name: str
    #: the Python value: int, float, bool, str, None, tuple or list (nested containers allowed)
    value: object
    #: 'int', 'float', 'bool', 'str', 'none', 'tuple' or 'list'
    kind: str
    #: the expression as written, e.g. ``2**19``
    source: str
    #: the annotation as written, e.g. ``int`` for ``X: int = 3``
    annotation: str | None
    line: int
    #: the trailing comment of the line, without ``#``, stripped
    comment: str | None


# -- discovery -----------------------------------------------------------------------------------

_NAME_ASSIGN = m.Assign(targets=[m.AssignTarget(target=m.Name())])
_NAME_ANN_ASSIGN = m.AnnAssign(target=m.Name())


def _constant_target(stmt: cst.CSTNode) -> tuple[str, cst.BaseExpression] | None:
    """(name, value node) when ``stmt`` is ``NAME = expr`` or ``NAME: T = expr``, else None."""
    if isinstance(stmt, cst.Assign) and m.matches(stmt, _NAME_ASSIGN):
        return cst.ensure_type(stmt.targets[0].target, cst.Name).value, stmt.value
    if (
        isinstance(stmt, cst.AnnAssign)
        and stmt.value is not None
        and m.matches(stmt, _NAME_ANN_ASSIGN)
    ):
        return cst.ensure_type(stmt.target, cst.Name).value, stmt.value
    return None


def _scan(module: cst.Module) -> tuple[list[Constant], Counter[str]]:
    """The module's literal top-level assignments (all of them) and its binding counts."""
    bindings = ModuleBindings()
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    wrapper.visit(bindings)
    positions = wrapper.resolve(PositionProvider)
    found = []
    for line in module.body:
        if not isinstance(line, cst.SimpleStatementLine):
            continue  # compound statements (def, class, if, for, with, try) are never scanned
        comment = line.trailing_whitespace.comment
        text = comment.value.lstrip("#").strip() if comment is not None else None
        for stmt in line.body:
            target = _constant_target(stmt)
            if target is None:
                continue
            name, value_node = target
            try:
                value = evaluate(value_node)
            except NotConstant:
                continue
            annotation = None
            if isinstance(stmt, cst.AnnAssign):
                annotation = module.code_for_node(stmt.annotation.annotation)
            found.append(
                Constant(
                    name=name,
                    value=value,
                    kind=kind_of(value),
                    source=module.code_for_node(value_node),
                    annotation=annotation,
                    line=positions[stmt].start.line,
                    comment=text or None,
                )
            )
    return found, bindings.counts


def discover_constants(source: str) -> list[Constant]:
    """The target's constants, in order of appearance.

    A constant is a module-body ``NAME = expr`` or ``NAME: T = expr`` whose ``expr`` is a
    number, string, bool or None literal, a tuple/list of those (nested allowed), or constant
    arithmetic (``2**19``, ``3 * 1024``, ``-1e-3``). Skipped: assignments inside functions,
    classes or compound statements, unpacking, chained ``A = B = 1``, calls, names, f-strings,
    and any name bound more than once in module scope. Raises ``PatchError`` on a syntax error.
    """
    found, counts = _scan(parse_source(source))
    return [c for c in found if counts[c.name] == 1]


# -- patching ------------------------------------------------------------------------------------


class ConstantTransformer(cst.CSTTransformer):
    """Replaces the value of top-level ``NAME = ...`` assignments; never descends into blocks.

    ``values`` maps a name to its new expression; ``matched`` counts the rewrites per name.
    """

    def __init__(self, values: Mapping[str, cst.BaseExpression]):
        super().__init__()
        self.values = dict(values)
        self.matched: Counter[str] = Counter()

    # Statements inside def/class/if/for/... bodies live in a suite: never enter one.
    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> bool:
        return False

    def visit_SimpleStatementSuite(self, node: cst.SimpleStatementSuite) -> bool:
        return False

    def _rewrite(self, original: cst.CSTNode, updated: cst.Assign | cst.AnnAssign) -> cst.CSTNode:
        target = _constant_target(original)
        if target is None or target[0] not in self.values:
            return updated
        self.matched[target[0]] += 1
        return updated.with_changes(value=self.values[target[0]])

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.CSTNode:
        return self._rewrite(original_node, updated_node)

    def leave_AnnAssign(
        self, original_node: cst.AnnAssign, updated_node: cst.AnnAssign
    ) -> cst.CSTNode:
        return self._rewrite(original_node, updated_node)


def apply_changes(source: str, changes: Mapping[str, object]) -> str:
    """``source`` with the values of the named constants replaced; every other byte kept.

    Raises ``PatchError`` when a name is not a constant (see ``discover_constants``), is bound
    more than once in module scope, or a value cannot be written as a literal.
    """
    if not changes:
        return source
    module = parse_source(source)
    found, counts = _scan(module)
    by_name = {c.name: c for c in found}
    for name in changes:
        if counts[name] > 1:
            raise PatchError(
                f"{name} is assigned {counts[name]} times in module scope; arx rewrites only a "
                "constant assigned exactly once",
                hint=f"keep a single top-level `{name} = ...` in the target",
            )
        if name not in by_name:
            known = [c.name for c in found if counts[c.name] == 1]
            raise PatchError(
                f"{name} is not a top-level constant of the target{close_hint(name, known)}"
            )
    values = {
        name: parse_expression(render_value(value, like=by_name[name].source), module)
        for name, value in changes.items()
    }
    transformer = ConstantTransformer(values)
    patched = module.visit(transformer)
    ensure_once(transformer.matched, changes, "constant")
    result = patched.code
    check = {c.name: c.value for c in discover_constants(result)}
    for name, value in changes.items():  # the patch must read back as exactly what was asked
        if name not in check or repr(check[name]) != repr(value):
            raise PatchError(f"patching {name} to {value!r} did not round-trip")
    return result
