"""Level 2's patches: structured edits of the runner module (``runner/runner.py``).

Four kinds, one transformer each (the paper's four): ``add_helper_class`` (a new top-level class
before ``class Runner``), ``add_method``, ``replace_method`` and ``extend_init`` (statements
appended to ``Runner.__init__``); ``method_name`` reads the name a new method would get. Generated
code is parsed with the runner module's own parser configuration; each patch matches exactly once
or raises ``PatchError``.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence

import libcst as cst

from arx.core.codemods.common import ModuleBindings, ensure_once, parse_source
from arx.core.codemods.untrusted import check_shape
from arx.core.errors import PatchError, close_hint

__all__ = [
    "RUNNER_CLASS",
    "add_helper_class",
    "add_method",
    "extend_init",
    "method_name",
    "replace_method",
]

#: the class every runner patch targets (exactly one, at top level)
RUNNER_CLASS = "Runner"


def _parse_snippet(code: str, module: cst.Module, what: str) -> cst.Module:
    """Parse generated code (dedented) with ``module``'s parser configuration."""
    text = textwrap.dedent(code).strip("\n")
    if not text.strip():
        raise PatchError(f"the {what} code is empty")
    check_shape(text, what)
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


def _is_runner(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.ClassDef) and node.name.value == RUNNER_CLASS


def _is_docstring(stmt: cst.CSTNode) -> bool:
    """A module's docstring line (plain isinstance tests: ``libcst.matchers``
    costs every arx start about 0.3 s to import)."""
    return (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


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
        if not _is_runner(original_node):
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
    ensure_once(transformer.matched, [RUNNER_CLASS], "top-level class")
    return patched


def add_helper_class(source: str, code: str, name: str | None = None) -> str:
    """``source`` with the class in ``code`` inserted just before ``class Runner``.

    ``code`` is one class definition, optionally preceded by import statements (they are placed
    after the module's last top-level import, unless the same line is already there). ``name``,
    when given, must be the class's name. Refuses a class name the module already binds.
    """
    module = parse_source(source)
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
    bindings = ModuleBindings()
    module.visit(bindings)
    if bindings.counts[cls_name]:
        raise PatchError(f"the runner module already defines {cls_name!r}")
    body = list(module.body)
    where = [
        i for i, s in enumerate(body)
        if _is_runner(s)
    ]
    ensure_once({RUNNER_CLASS: len(where)}, [RUNNER_CLASS], "top-level class")
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
            last = 0 if body and _is_docstring(body[0]) else -1
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
    module = parse_source(source)
    func = _one_def(code, module, "new_method")
    return _patch_runner(module, AddMethodTransformer(func)).code


def replace_method(source: str, target: str, code: str) -> str:
    """``source`` with ``Runner.<target>`` replaced by the method in ``code`` (same name)."""
    module = parse_source(source)
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
            f"once{close_hint(target, known)}"
        )
    return patched.code


def extend_init(source: str, code: str) -> str:
    """``source`` with the statements in ``code`` appended to ``Runner.__init__``."""
    module = parse_source(source)
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
