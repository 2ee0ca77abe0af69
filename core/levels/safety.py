"""The gate's safety step: an allow-list over the runner's syntax tree, as fast feedback.

This is a lint, not the boundary: generated code runs in a sandboxed worker (``worker.py``), and
an allow-list of names can never prove that Python code cannot reach ``os``. What it does is
refuse, in well under a second and with a line number an LLM can act on, the obvious ways out:
modules beyond ``ALLOWED_MODULES`` (and what the template imports), the interpreter's escape
hatches (``FORBIDDEN_NAMES``, ``FORBIDDEN_ATTRS``, dunders beyond ``ALLOWED_DUNDERS``), private
attributes of anything but ``self`` or ``cls``, a submodule used past what was imported (also
when bound by ``from pkg import mod``), and computed names in the ``getattr`` family.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import types
from importlib.resources import files

__all__ = ["ALLOWED_DUNDERS", "ALLOWED_MODULES", "FORBIDDEN_ATTRS", "FORBIDDEN_NAMES",
           "check_safety"]

#: pure-computation standard modules a runner may import (plus what the template imports)
ALLOWED_MODULES = frozenset({
    "__future__", "bisect", "collections", "copy", "dataclasses", "enum", "functools", "heapq",
    "itertools", "json", "math", "random", "re", "statistics", "typing",
})
#: names a runner may not mention at all
FORBIDDEN_NAMES = frozenset({
    "os", "sys", "subprocess", "socket", "importlib", "builtins", "open", "eval", "exec",
    "compile", "__import__", "globals", "locals", "vars", "breakpoint", "input", "help", "exit",
    "quit", "memoryview",
})
#: attributes a runner may not read or write (escape hatches of the allowed modules and of
#: frames, generators and tracebacks; ``format`` can walk attributes from inside a string)
FORBIDDEN_ATTRS = frozenset({
    "os", "sys", "subprocess", "socket", "importlib", "builtins", "environ", "system", "popen",
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame",
    "ag_code", "ag_await", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "tb_frame",
    "tb_next", "co_code", "co_consts", "format", "format_map", "get_type_hints", "ForwardRef",
})
#: the only dunder attributes a runner may use (``super().__init__()``, ``cls.__name__``)
ALLOWED_DUNDERS = frozenset({
    "__init__", "__post_init__", "__name__", "__qualname__", "__doc__", "__repr__", "__str__",
    "__eq__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__len__", "__iter__",
    "__next__", "__contains__", "__getitem__", "__setitem__", "__call__",
})
_ATTR_FUNCS = ("getattr", "setattr", "delattr", "hasattr")
_DUNDER = re.compile(r"__([A-Za-z0-9_]+?)__")


def _template_text() -> str:
    return files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")


def _import_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def check_safety(source: str, template_source: str | None = None) -> list[str]:
    """Every reason the gate refuses ``source`` (empty: allowed), each with its line."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [f"syntax error (line {e.lineno}): {e.msg}"]
    template = _template_text() if template_source is None else template_source
    try:
        allowed = ALLOWED_MODULES | _import_roots(ast.parse(template))
    except SyntaxError:
        allowed = ALLOWED_MODULES
    checker = _SafetyChecker(allowed)
    checker.check(tree)
    return checker.problems


class _SafetyChecker(ast.NodeVisitor):
    """Walks the whole module (not only the patch): the allow-list applies to all of it."""

    def __init__(self, allowed: frozenset[str] | set[str]):
        self.allowed = frozenset(allowed)
        self.found: list[tuple[int, int, int, str]] = []
        self.modules: dict[str, str] = {}  # name bound by an import -> dotted module
        self.dotted: set[str] = set()  # every module imported with `import a.b`
        self.parents: dict[ast.AST, ast.AST] = {}

    @property
    def problems(self) -> list[str]:
        """In source order; of nested nodes at one place, the innermost first."""
        return [f"{text} (line {line})" for line, _, _, text in sorted(self.found)]

    def refuse(self, node: ast.AST, text: str) -> None:
        where = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0),
                 getattr(node, "end_col_offset", 0) or 0)
        self.found.append((*where, text))

    def check(self, tree: ast.AST) -> None:
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        for node in ast.walk(tree):  # bindings first: a use may precede its import textually
            if isinstance(node, ast.ImportFrom) and node.module and not node.level \
                    and node.module.split(".")[0] in self.allowed:
                for alias in node.names:  # `from json import tool`: `tool` is a module too
                    if _is_module(f"{node.module}.{alias.name}"):
                        self.modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.modules[alias.asname] = alias.name
                    else:
                        root = alias.name.split(".")[0]
                        self.modules[root] = root
                    parts = alias.name.split(".")
                    self.dotted.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        self.visit(tree)

    # imports
    def _allowed_module(self, node: ast.AST, module: str) -> bool:
        if module.split(".")[0] in self.allowed:
            return True
        self.refuse(node, f"import of {module.split('.')[0]!r} is not allowed (allowed: "
                          f"{', '.join(sorted(self.allowed - {'__future__'}))})")
        return False

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._allowed_module(node, alias.name):
                try:
                    importlib.import_module(alias.name)
                except ImportError:
                    self.refuse(node, f"module {alias.name!r} does not exist")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.refuse(node, "relative imports are not allowed")
            return
        module = node.module or ""
        if not self._allowed_module(node, module):
            return
        try:
            mod = importlib.import_module(module)
        except ImportError:
            self.refuse(node, f"module {module!r} does not exist")
            return
        for alias in node.names:
            if alias.name == "*":
                self.refuse(node, f"`from {module} import *` is not allowed")
            elif module != "__future__":
                self._module_attr(node, mod, module, alias.name, "import")

    def _module_attr(self, node: ast.AST, mod: types.ModuleType, path: str, name: str,
                     how: str) -> None:
        if name.startswith("_") or name in FORBIDDEN_ATTRS:
            self.refuse(node, f"{how} of {path}.{name} is not allowed")
        elif f"{path}.{name}" not in self.dotted and _is_module(f"{path}.{name}"):
            self.refuse(node, f"{how} of module {path}.{name} is not allowed "
                              f"(import {path}.{name} itself)")
        elif not hasattr(mod, name):
            self.refuse(node, f"module {path!r} has no attribute {name!r}")
        elif isinstance(getattr(mod, name), types.ModuleType) and f"{path}.{name}" not in \
                self.dotted:
            self.refuse(node, f"{how} of module {path}.{name} is not allowed "
                              f"(import {path}.{name} itself)")

    # names and attributes
    def _module_path(self, node: ast.AST) -> str | None:
        """The dotted module an expression denotes (``collections.abc``), or None."""
        if isinstance(node, ast.Name):
            return self.modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._module_path(node.value)
            if base is not None and f"{base}.{node.attr}" in self.dotted:
                return f"{base}.{node.attr}"
        return None

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in FORBIDDEN_NAMES:
            self.refuse(node, f"use of {name!r} is not allowed")
        elif name.startswith("__") and name.endswith("__") and name not in ("__name__",
                                                                            "__doc__"):
            self.refuse(node, f"use of {name!r} is not allowed")
        elif name in _ATTR_FUNCS:
            self._attr_func(node)
        elif name in self.modules:
            parent = self.parents.get(node)
            as_base = isinstance(parent, ast.Attribute) and parent.value is node
            if not as_base and not isinstance(node.ctx, ast.Store):
                self.refuse(node, f"module {name!r} may only be used as `{name}.attribute`")

    def _attr_func(self, node: ast.Name) -> None:
        call = self.parents.get(node)
        if not (isinstance(call, ast.Call) and call.func is node and len(call.args) >= 2):
            self.refuse(node, f"{node.id} may only be called, with a literal attribute name")
            return
        name = call.args[1]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            self.refuse(node, f"{node.id} with a computed attribute name is not allowed")
        else:
            self._attr_name(node, name.value, call.args[0])

    def _attr_name(self, node: ast.AST, attr: str, base: ast.AST | None = None,
                   private: bool = True) -> None:
        if attr.startswith("__") and attr.endswith("__"):
            if attr not in ALLOWED_DUNDERS:
                self.refuse(node, f"access to attribute {attr!r} is not allowed")
        elif attr in FORBIDDEN_ATTRS:
            self.refuse(node, f"access to attribute {attr!r} is not allowed")
        elif private and attr.startswith("_") and not (isinstance(base, ast.Name)
                                           and base.id in ("self", "cls")):
            self.refuse(node, f"access to private attribute {attr!r} of anything but self or "
                              "cls is not allowed")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = self._module_path(node.value)
        self._attr_name(node, node.attr, node.value, private=base is None)
        if base is not None and self._module_path(node) is None:
            if not isinstance(node.ctx, ast.Load):
                self.refuse(node, f"assigning to {base}.{node.attr} is not allowed")
            else:
                try:
                    mod = importlib.import_module(base)
                except ImportError:
                    mod = None
                if mod is not None:
                    self._module_attr(node, mod, base, node.attr, "use")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            for name in _DUNDER.findall(node.value):
                if f"__{name}__" not in ALLOWED_DUNDERS:
                    self.refuse(node, f"the string mentions '__{name}__', which is not allowed")
                    break


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names an importable module (a submodule of an allowed package)."""
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False
