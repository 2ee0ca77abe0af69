"""The one module that owns libcst: reading and patching Python source structurally.

Level 1 touches only the target's **constants**: top-level ``NAME = literal`` assignments
(``discover_constants`` finds them, ``apply_changes`` rewrites their values, nothing else).
Level 2 patches the runner (``runner/runner.py``) with four structured kinds: ``add_helper_class``,
``add_method``, ``replace_method`` and ``extend_init``, one transformer each, sharing the
module-level helpers (``_parse``, ``_ensure_once``).

Every patch matches exactly once or raises ``PatchError``; it never guesses.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

from arx.core.errors import PatchError

__all__ = [
    "Constant",
    "add_helper_class",
    "add_method",
    "apply_changes",
    "discover_constants",
    "extend_init",
    "method_name",
    "render_value",
    "replace_method",
]

#: limits of the constant arithmetic evaluator (``2**19`` yes, ``10**10**10`` no)
MAX_EXPONENT = 1024
MAX_INT_BITS = 4096


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


# -- shared helpers ------------------------------------------------------------------------------


def _parse(source: str) -> cst.Module:
    """Parse a whole module; a syntax error becomes a ``PatchError`` naming the line."""
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as e:
        raise PatchError(
            f"the source does not parse (line {e.raw_line}, column {e.raw_column + 1}): {e.message}"
        ) from None


def _parse_expression(text: str, module: cst.Module) -> cst.BaseExpression:
    """Parse generated expression text with the module's own parser configuration."""
    try:
        return cst.parse_expression(text, config=module.config_for_parsing)
    except cst.ParserSyntaxError as e:
        raise PatchError(f"generated code does not parse: {text!r}: {e.message}") from None


def _ensure_once(counts: Mapping[str, int], wanted: Iterable[str], what: str) -> None:
    """Raise ``PatchError`` unless every wanted target was matched exactly once."""
    for key in wanted:
        n = counts.get(key, 0)
        if n != 1:
            raise PatchError(f"{what} {key!r} matched {n} times, expected exactly once")


def _close(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


# -- safe evaluation of literal expressions ------------------------------------------------------


class _NotConstant(Exception):
    """The expression is not a literal this module is willing to evaluate."""


_BINARY: dict[type, Callable[[object, object], object]] = {
    cst.Add: operator.add,
    cst.Subtract: operator.sub,
    cst.Multiply: operator.mul,
    cst.Divide: operator.truediv,
    cst.FloorDivide: operator.floordiv,
    cst.Modulo: operator.mod,
    cst.Power: operator.pow,
}
_NAMED = {"True": True, "False": False, "None": None}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(value: object) -> object:
    if not _is_number(value):  # e.g. (-8) ** 0.5 is complex
        raise _NotConstant("not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _NotConstant("integer too large")
    if isinstance(value, float) and not math.isfinite(value):  # 1e400, 1e308 * 10
        raise _NotConstant("not a finite number")
    return value


def _power(base: object, exponent: object) -> object:
    if abs(exponent) > MAX_EXPONENT:  # type: ignore[arg-type]
        raise _NotConstant("exponent too large")
    big = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if big and base.bit_length() * exponent > MAX_INT_BITS:  # type: ignore[union-attr,operator]
        raise _NotConstant("integer too large")
    return operator.pow(base, exponent)  # type: ignore[call-overload]


def _evaluate(node: cst.BaseExpression) -> object:
    """The value of a literal expression, by walking the CST (no eval). Raises _NotConstant."""
    if isinstance(node, (cst.Integer, cst.Float)):
        return _check_number(node.evaluated_value)
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        value = node.evaluated_value  # None for f-strings, bytes for b"..."
        if not isinstance(value, str):
            raise _NotConstant("not a plain string")
        return value
    if isinstance(node, cst.Name) and node.value in _NAMED:
        return _NAMED[node.value]
    if isinstance(node, (cst.Tuple, cst.List)):
        items = []
        for element in node.elements:
            if not isinstance(element, cst.Element):
                raise _NotConstant("starred element")
            items.append(_evaluate(element.value))
        return tuple(items) if isinstance(node, cst.Tuple) else items
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
        operand = _evaluate(node.expression)
        if not _is_number(operand):
            raise _NotConstant("unary operator on a non-number")
        return _check_number(-operand if isinstance(node.operator, cst.Minus) else operand)
    if isinstance(node, cst.BinaryOperation) and type(node.operator) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if not (_is_number(left) and _is_number(right)):
            raise _NotConstant("arithmetic on a non-number")
        try:
            if isinstance(node.operator, cst.Power):
                return _check_number(_power(left, right))
            return _check_number(_BINARY[type(node.operator)](left, right))
        except (ArithmeticError, ValueError) as e:  # division by zero, overflow
            raise _NotConstant(str(e)) from None
    raise _NotConstant(type(node).__name__)


def _kind(value: object) -> str:
    if value is None:
        return "none"
    return {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple", list: "list"}[
        type(value)
    ]


# -- constants: discovery ------------------------------------------------------------------------


class _ModuleBindings(cst.CSTVisitor):
    """Counts how often each name is bound in module scope (outside functions and classes).

    A constant is only safe to rewrite if its top-level assignment is its only binding: a second
    one (another assignment, one in an ``if`` block, an import, a ``for`` target) would make the
    value that the script really uses depend on more than the line arx edits.
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
    bindings = _ModuleBindings()
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
                value = _evaluate(value_node)
            except _NotConstant:
                continue
            annotation = None
            if isinstance(stmt, cst.AnnAssign):
                annotation = module.code_for_node(stmt.annotation.annotation)
            found.append(
                Constant(
                    name=name,
                    value=value,
                    kind=_kind(value),
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
    found, counts = _scan(_parse(source))
    return [c for c in found if counts[c.name] == 1]


# -- constants: rendering ------------------------------------------------------------------------

_POW2_STYLE = re.compile(r"2(\s*\*\*\s*)\d+")
_SCI_FLOAT = re.compile(r"[-+]?\s*(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_UNDERSCORE_INT = re.compile(r"[-+]?\s*\d+(_\d+)+")


def _quote_preference(like: str | None) -> str:
    if like:
        for char in like:
            if char in "'\"":
                return char
    return '"'


def _render_str(value: str, quote: str) -> str:
    text = repr(value)  # Python picks the quote: ' unless the value holds ' and no "
    if quote == '"' and text[0] == "'" and '"' not in value:
        return '"' + text[1:-1] + '"'  # no quote inside: the escapes are valid for either
    return text


def _render_float(value: float, like: str | None) -> str:
    if not math.isfinite(value):
        raise PatchError(f"{value!r} cannot be written as a Python literal")
    text = repr(value)
    if like and _SCI_FLOAT.fullmatch(like.strip()) and value != 0:
        # keep the author's 3e-4 style: same digits as repr, so the value round-trips exactly
        mantissa, _, exponent = f"{Decimal(text).normalize():e}".partition("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def render_value(value: object, like: str | None = None) -> str:
    """A Python literal for ``value`` that parses back to the same value.

    ``like`` is the source text it replaces, used to keep the author's style: ``2**k`` for a
    power of two, ``1e-3`` scientific notation, ``1_000`` digit grouping, and the quote
    character of strings (double quotes when there is no original).
    """
    return _render(value, like, _quote_preference(like))


def _render(value: object, like: str | None, quote: str) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        if like is not None:
            m = _POW2_STYLE.fullmatch(like.strip())
            if m and value >= 2 and value & (value - 1) == 0:
                return f"2{m.group(1)}{value.bit_length() - 1}"
            if _UNDERSCORE_INT.fullmatch(like.strip()):
                return f"{value:_}"
        return repr(value)
    if isinstance(value, float):
        return _render_float(value, like)
    if isinstance(value, str):
        return _render_str(value, quote)
    if isinstance(value, (tuple, list)):
        items = [_render(v, None, quote) for v in value]  # elements keep the quote style only
        if isinstance(value, list):
            return "[" + ", ".join(items) + "]"
        if len(items) == 1:
            return f"({items[0]},)"
        return "(" + ", ".join(items) + ")"
    raise PatchError(f"a {type(value).__name__} value ({value!r}) cannot be written as a literal")


# -- constants: patching -------------------------------------------------------------------------


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
    module = _parse(source)
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
                f"{name} is not a top-level constant of the target{_close(name, known)}"
            )
    values = {
        name: _parse_expression(render_value(value, like=by_name[name].source), module)
        for name, value in changes.items()
    }
    transformer = ConstantTransformer(values)
    patched = module.visit(transformer)
    _ensure_once(transformer.matched, changes, "constant")
    result = patched.code
    check = {c.name: c.value for c in discover_constants(result)}
    for name, value in changes.items():  # the patch must read back as exactly what was asked
        if name not in check or repr(check[name]) != repr(value):
            raise PatchError(f"patching {name} to {value!r} did not round-trip")
    return result


# -- runner patches (Level 2) --------------------------------------------------------------------
#
# Four structured patch kinds on the module that defines ``class Runner`` (the paper's four):
# a new top-level helper class, a new ``Runner`` method, a replaced ``Runner`` method, and
# statements appended to ``Runner.__init__``. Generated code is parsed with the runner module's
# own parser configuration; each patch matches exactly once or raises ``PatchError``.

RUNNER_CLASS = "Runner"


def _parse_snippet(code: str, module: cst.Module, what: str) -> cst.Module:
    """Parse generated code (dedented) with ``module``'s parser configuration."""
    text = textwrap.dedent(code).strip("\n")
    if not text.strip():
        raise PatchError(f"the {what} code is empty")
    try:
        snippet = cst.parse_module(text + "\n", config=module.config_for_parsing)
    except cst.ParserSyntaxError as e:
        raise PatchError(
            f"the {what} code does not parse (line {e.raw_line}, column {e.raw_column + 1}): "
            f"{e.message}"
        ) from None
    header = [line for line in snippet.header if line.comment is not None]
    if header and snippet.body:  # comments above the first statement belong to it
        first = snippet.body[0]
        first = first.with_changes(leading_lines=[*header, *first.leading_lines])
        snippet = snippet.with_changes(header=[], body=[first, *snippet.body[1:]])
    return snippet


def _is_import(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body
    )


def _kinds(stmts: Iterable[cst.CSTNode]) -> str:
    return ", ".join(type(s).__name__ for s in stmts) or "nothing"


def _one_def(code: str, module: cst.Module, what: str) -> cst.FunctionDef:
    """The single ``def`` that ``code`` must consist of."""
    body = _parse_snippet(code, module, what).body
    if len(body) != 1 or not isinstance(body[0], cst.FunctionDef):
        raise PatchError(f"the {what} code must be exactly one `def`; got {_kinds(body)}")
    func = body[0]
    params = func.params.params or func.params.posonly_params
    if not params or params[0].name.value != "self":
        raise PatchError(f"method {func.name.value!r} must take `self` as its first argument")
    return func


def _runner_methods(runner: cst.ClassDef) -> Counter[str]:
    body = runner.body.body if isinstance(runner.body, cst.IndentedBlock) else ()
    return Counter(s.name.value for s in body if isinstance(s, cst.FunctionDef))


class _RunnerTransformer(cst.CSTTransformer):
    """Base: finds the top-level ``class Runner`` (counted in ``matched``) and lets a subclass
    rewrite it in ``patch_runner``; never descends into functions or other classes."""

    def __init__(self) -> None:
        super().__init__()
        self.matched: Counter[str] = Counter()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def leave_ClassDef(
        self, original_node: cst.ClassDef, updated_node: cst.ClassDef
    ) -> cst.CSTNode:
        if not m.matches(original_node, m.ClassDef(name=m.Name(RUNNER_CLASS))):
            return updated_node
        self.matched[RUNNER_CLASS] += 1
        return self.patch_runner(updated_node)

    def patch_runner(self, node: cst.ClassDef) -> cst.ClassDef:
        return node

    @staticmethod
    def body_of(node: cst.ClassDef | cst.FunctionDef) -> list[cst.BaseStatement]:
        if not isinstance(node.body, cst.IndentedBlock):
            name = node.name.value
            raise PatchError(f"{name!r} is written on one line; arx patches only indented blocks")
        return list(node.body.body)


class AddMethodTransformer(_RunnerTransformer):
    """Appends a method to ``Runner``; refuses a name that is already a method."""

    def __init__(self, func: cst.FunctionDef):
        super().__init__()
        self.func = func

    def patch_runner(self, node: cst.ClassDef) -> cst.ClassDef:
        name = self.func.name.value
        if _runner_methods(node)[name]:
            raise PatchError(
                f"Runner already has a method {name!r}", hint="use a replace_method patch"
            )
        comments = [line for line in self.func.leading_lines if line.comment is not None]
        func = self.func.with_changes(leading_lines=[cst.EmptyLine(indent=False), *comments])
        body = [*self.body_of(node), func]
        return node.with_changes(body=node.body.with_changes(body=body))


class ReplaceMethodTransformer(_RunnerTransformer):
    """Replaces ``Runner.<target>``, keeping the comments and blank lines above it."""

    def __init__(self, target: str, func: cst.FunctionDef):
        super().__init__()
        self.target = target
        self.func = func
        self.replaced = 0

    def patch_runner(self, node: cst.ClassDef) -> cst.ClassDef:
        body = []
        for stmt in self.body_of(node):
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == self.target:
                self.replaced += 1
                stmt = self.func.with_changes(leading_lines=stmt.leading_lines)
            body.append(stmt)
        return node.with_changes(body=node.body.with_changes(body=body))


class ExtendInitTransformer(_RunnerTransformer):
    """Appends statements to the end of ``Runner.__init__``."""

    def __init__(self, statements: Sequence[cst.BaseStatement]):
        super().__init__()
        self.statements = list(statements)
        self.extended = 0

    def patch_runner(self, node: cst.ClassDef) -> cst.ClassDef:
        body = []
        for stmt in self.body_of(node):
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "__init__":
                self.extended += 1
                inner = [*self.body_of(stmt), *self.statements]
                stmt = stmt.with_changes(body=stmt.body.with_changes(body=inner))
            body.append(stmt)
        return node.with_changes(body=node.body.with_changes(body=body))


def _patch_runner(module: cst.Module, transformer: _RunnerTransformer) -> cst.Module:
    patched = module.visit(transformer)
    _ensure_once(transformer.matched, [RUNNER_CLASS], "top-level class")
    return patched


def add_helper_class(source: str, code: str, name: str | None = None) -> str:
    """``source`` with the class in ``code`` inserted just before ``class Runner``.

    ``code`` is one class definition, optionally preceded by import statements (they are placed
    after the module's last top-level import, unless the same line is already there). ``name``,
    when given, must be the class's name. Refuses a class name the module already binds.
    """
    module = _parse(source)
    snippet = _parse_snippet(code, module, "new_helper_class")
    imports = [s for s in snippet.body if _is_import(s)]
    rest = [s for s in snippet.body if not _is_import(s)]
    if len(rest) != 1 or not isinstance(rest[0], cst.ClassDef):
        raise PatchError(
            "the new_helper_class code must be exactly one class definition (imports above it "
            f"allowed); got {_kinds(rest)}"
        )
    cls = rest[0]
    cls_name = cls.name.value
    if name is not None and cls_name != name:
        raise PatchError(f"the helper class is named {cls_name!r}, but the mechanism is {name!r}")
    if cls_name == RUNNER_CLASS:
        raise PatchError("a helper class cannot be named Runner", hint="use replace_method")
    _, counts = _scan(module)
    if counts[cls_name]:
        raise PatchError(f"the runner module already defines {cls_name!r}")
    body = list(module.body)
    where = [
        i for i, s in enumerate(body)
        if m.matches(s, m.ClassDef(name=m.Name(RUNNER_CLASS)))
    ]
    _ensure_once({RUNNER_CLASS: len(where)}, [RUNNER_CLASS], "top-level class")
    runner_at = where[0]
    two_blank = [cst.EmptyLine(indent=False), cst.EmptyLine(indent=False)]
    runner = body[runner_at]
    blank_lead = sum(1 for line in runner.leading_lines if line.comment is None)
    if blank_lead < 2:  # keep two blank lines between top-level definitions
        body[runner_at] = runner.with_changes(leading_lines=[*two_blank, *runner.leading_lines])
    comments = [line for line in cls.leading_lines if line.comment is not None]
    lead = [*two_blank, *comments] if runner_at else comments
    body.insert(runner_at, cls.with_changes(leading_lines=lead))
    have = {module.code_for_node(s).strip() for s in body if _is_import(s)}
    new_imports = []
    for stmt in imports:
        text = module.code_for_node(stmt).strip()
        if text not in have:
            have.add(text)
            new_imports.append(stmt.with_changes(leading_lines=[]))
    if new_imports:
        last = max((i for i, s in enumerate(body[:runner_at]) if _is_import(s)), default=-1)
        if last < 0:  # after the docstring (and any __future__ import), if there is one
            last = 0 if body and m.matches(body[0], m.SimpleStatementLine(
                body=[m.Expr(value=m.SimpleString() | m.ConcatenatedString())])) else -1
        body[last + 1:last + 1] = new_imports
        after = last + 1 + len(new_imports)
        if after < len(body) and isinstance(body[after], (cst.ClassDef, cst.FunctionDef)):
            nxt = body[after]
            blank = sum(1 for line in nxt.leading_lines if line.comment is None)
            if blank < 2:
                body[after] = nxt.with_changes(
                    leading_lines=[*two_blank[: 2 - blank], *nxt.leading_lines])
    return module.with_changes(body=body).code


def add_method(source: str, code: str) -> str:
    """``source`` with the method in ``code`` appended to ``class Runner``."""
    module = _parse(source)
    func = _one_def(code, module, "new_method")
    return _patch_runner(module, AddMethodTransformer(func)).code


def replace_method(source: str, target: str, code: str) -> str:
    """``source`` with ``Runner.<target>`` replaced by the method in ``code`` (same name)."""
    module = _parse(source)
    func = _one_def(code, module, "replace_method")
    if func.name.value != target:
        raise PatchError(
            f"the replace_method code defines {func.name.value!r}, but the target is {target!r}"
        )
    transformer = ReplaceMethodTransformer(target, func)
    patched = _patch_runner(module, transformer)
    if transformer.replaced != 1:
        known = list(_runner_methods(_runner_class(module)))
        raise PatchError(
            f"Runner method {target!r} matched {transformer.replaced} times, expected exactly "
            f"once{_close(target, known)}"
        )
    return patched.code


def extend_init(source: str, code: str) -> str:
    """``source`` with the statements in ``code`` appended to ``Runner.__init__``."""
    module = _parse(source)
    statements = _parse_snippet(code, module, "modify_init").body
    if not statements:
        raise PatchError("the modify_init code has no statements")
    first = statements[0]
    statements = [first.with_changes(leading_lines=[]), *statements[1:]]
    transformer = ExtendInitTransformer(statements)
    patched = _patch_runner(module, transformer)
    if transformer.extended != 1:
        raise PatchError(f"Runner.__init__ matched {transformer.extended} times, expected once")
    return patched.code


def _runner_class(module: cst.Module) -> cst.ClassDef:
    for stmt in module.body:
        if isinstance(stmt, cst.ClassDef) and stmt.name.value == RUNNER_CLASS:
            return stmt
    raise PatchError("the runner module defines no top-level class Runner")


def method_name(code: str) -> str:
    """The name of the single ``def`` in ``code`` (as a new_method patch must hold)."""
    return _one_def(code, cst.parse_module(""), "new_method").name.value
