"""Level 1's patches: the target's parameters, found and rewritten with libcst.

A parameter is a literal value the script is configured with, named after where it lives:
a top-level ``NAME = literal`` bound exactly once in module scope (``NAME``), an argparse
``default=`` or switch (``--lr``), a field of a config class (``Args.lr``), an entry of a
module-level dict (``params.lr``) (``surfaces.py`` finds these three), a literal keyword of a
call (``LBFGS.lr``) or the default of a function the script calls (``main.lr``) (``calls.py``).
A target whose suffix says YAML, TOML or JSON goes to ``configfiles.py``; a target of several
files (``[target] files``) is a bundle (``bundle.py``), scanned and patched file by file. ``discover_constants``
finds them all, ``scan_parameters`` also says what was skipped and why and where else the script reads its
settings from; ``apply_changes`` rewrites values and nothing else, each name matched exactly
once, and reads the result back to check that every value round-trips.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from arx.core.codemods import bundle
from arx.core.codemods.calls import CALL, DEFAULT, find_call_keywords, find_defaults
from arx.core.codemods.common import (
    ModuleBindings,
    add_keyword,
    ensure_once,
    excerpt,
    parse_expression,
    parse_source,
)
from arx.core.codemods.configfiles import apply_config, config_format, scan_config
from arx.core.codemods.guards import argparse_guards
from arx.core.codemods.records import CONSTANT, Constant, Scan, Skipped
from arx.core.codemods.sources import config_sources
from arx.core.codemods.surfaces import ARGPARSE, DICT, FIELD, argparse_dests, find_surfaces
from arx.core.codemods.values import NotConstant, evaluate, kind_of, render_value
from arx.core.errors import PatchError, close_hint

__all__ = ["ARGPARSE", "CALL", "CONSTANT", "DEFAULT", "DICT", "FIELD", "Constant", "Scan", "Skipped",
           "apply_changes", "discover_constants", "scan_parameters"]

# -- discovery -----------------------------------------------------------------------------------

def _constant_target(stmt: cst.CSTNode) -> tuple[str, cst.BaseExpression] | None:
    """(name, value node) when ``stmt`` is ``NAME = expr`` or ``NAME: T = expr``, else None.
    (Plain isinstance tests: ``libcst.matchers`` costs every arx start about 0.3 s to import.)"""
    if (isinstance(stmt, cst.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0].target, cst.Name)):
        return stmt.targets[0].target.value, stmt.value
    if (isinstance(stmt, cst.AnnAssign) and stmt.value is not None
            and isinstance(stmt.target, cst.Name)):
        return stmt.target.value, stmt.value
    return None


class _Comments(cst.CSTVisitor):
    """The trailing comment of every simple statement's line, anywhere in the module."""

    def __init__(self) -> None:
        super().__init__()
        self.of: dict[int, str] = {}

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        comment = node.trailing_whitespace.comment
        text = comment.value.lstrip("#").strip() if comment is not None else ""
        if text:
            for stmt in node.body:
                self.of[id(stmt)] = text


@dataclass(frozen=True)
class _Collected:
    #: (parameter, the node holding its value), in order of appearance per surface
    entries: list[tuple[Constant, cst.BaseExpression]]
    skipped: list[Skipped]
    counts: Counter[str]
    #: names of store_true/false switches without ``default=`` (their node is the call)
    implied: frozenset[str] = frozenset()


def _top_level(module: cst.Module, counts: Counter[str], line_of, comments: _Comments,
               entries: list, skipped: list[Skipped]) -> None:
    """Top-level ``NAME = literal`` constants bound exactly once; the others, skipped."""
    reported: set[str] = set()
    for line in module.body:
        if not isinstance(line, cst.SimpleStatementLine):
            continue  # compound statements (def, class, if, for, with, try) are never scanned
        for stmt in line.body:
            target = _constant_target(stmt)
            if target is None:
                continue
            name, value_node = target
            try:
                value = evaluate(value_node)
            except NotConstant:
                if name not in reported and not _is_container_call(value_node):
                    code = module.code_for_node(value_node)
                    skipped.append(Skipped(name, line_of(stmt), f"not a literal ({excerpt(code)})"))
                    reported.add(name)
                continue
            if counts[name] > 1:
                if name not in reported:
                    skipped.append(Skipped(name, line_of(stmt),
                                           f"assigned {counts[name]} times in module scope"))
                    reported.add(name)
                continue
            annotation = None
            if isinstance(stmt, cst.AnnAssign):
                annotation = module.code_for_node(stmt.annotation.annotation)
            entries.append((Constant(
                name=name, value=value, kind=kind_of(value),
                source=module.code_for_node(value_node), annotation=annotation,
                line=line_of(stmt), comment=comments.of.get(id(stmt))), value_node))


def _is_container_call(node: cst.BaseExpression) -> bool:
    """A dict literal or ``dict(...)``: its entries are parameters of their own."""
    return isinstance(node, cst.Dict) or (
        isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "dict")


def _help(anchor: cst.CSTNode) -> str | None:
    """An argparse call's ``help=`` text."""
    if isinstance(anchor, cst.Call):
        for arg in anchor.args:
            if arg.keyword is not None and arg.keyword.value == "help":
                value = getattr(arg.value, "evaluated_value", None)
                return value.strip() or None if isinstance(value, str) else None
    return None


def _collect(module: cst.Module) -> _Collected:
    bindings = ModuleBindings()
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    wrapper.visit(bindings)
    positions = wrapper.resolve(PositionProvider)
    comments = _Comments()
    module.visit(comments)

    def line_of(node: cst.CSTNode) -> int:
        return positions[node].start.line

    entries: list[tuple[Constant, cst.BaseExpression]] = []
    skipped: list[Skipped] = []
    _top_level(module, bindings.counts, line_of, comments, entries, skipped)
    found, missed = find_surfaces(module, bindings.counts)
    find_call_keywords(module, bindings.counts, found, missed)
    find_defaults(module, bindings.counts, line_of, found, missed)
    for f in found:
        value = evaluate(f.node) if f.implied is None else f.implied
        if f.as_float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        comment = _help(f.anchor) if f.surface == ARGPARSE else comments.of.get(id(f.anchor))
        source = module.code_for_node(f.node) if f.implied is None else repr(value)
        entries.append((Constant(
            name=f.name, value=value, kind=kind_of(value), source=source,
            annotation=f.annotation, line=line_of(f.anchor), comment=comment,
            surface=f.surface, choices=f.choices), f.node))
    skipped.extend(Skipped(x.name, line_of(x.anchor), x.reason) for x in missed)
    entries = _older_surfaces_win(entries, skipped)
    names = Counter(c.name for c, _ in entries)
    for name in [n for n, k in names.items() if k > 1]:  # never guess between two places
        first = next(c for c, _ in entries if c.name == name)
        skipped.append(Skipped(name, first.line, f"found {names[name]} times"))
    entries = [(c, node) for c, node in entries if names[c.name] == 1]
    implied = frozenset(f.name for f in found if f.implied is not None)
    return _Collected(entries, skipped, bindings.counts, implied)


def _older_surfaces_win(entries: list, skipped: list[Skipped]) -> list:
    """A call keyword or function default named like a setting of another surface
    (``Args(lr=...)`` beside the field ``Args.lr``) is skipped, so that the settings that
    existing runs name keep their meaning."""
    older = {c.name: c for c, _ in entries if c.surface not in (CALL, DEFAULT)}
    kept = []
    for c, node in entries:
        other = older.get(c.name)
        if other is not None and c.surface in (CALL, DEFAULT):
            skipped.append(Skipped(c.name, c.line, f"named like the {other.surface} setting at "
                                                   f"line {other.line}, which keeps the name"))
        else:
            kept.append((c, node))
    return kept


def scan_parameters(source: str, path: str | None = None) -> Scan:
    """Everything ``arx init`` reports about a script: its parameters (see
    ``discover_constants``), what was skipped and why, and where else it reads settings from.
    ``path``: the target's file, whose suffix says when it is a config file
    (``configfiles.py``). Raises ``PatchError`` on a syntax error."""
    if bundle.is_bundle(source):
        return _scan_bundle(source)
    fmt = config_format(path)
    if fmt is not None:
        return scan_config(source, fmt)
    module = parse_source(source)
    collected = _collect(module)
    sources, strings = config_sources(module)
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    guards = argparse_guards(module, argparse_dests(module),
                             lambda node: positions[node].start.line)
    return Scan(found=tuple(c for c, _ in collected.entries),
                skipped=tuple(sorted(collected.skipped, key=lambda s: (s.line, s.name))),
                sources=tuple(sources), strings=tuple(strings), guards=guards)


def discover_constants(source: str, path: str | None = None) -> list[Constant]:
    """The target's parameters: its top-level constants in order of appearance, then argparse
    defaults, config class fields and dict entries (see the module docstring).

    A top-level constant is a module-body ``NAME = expr`` or ``NAME: T = expr`` whose ``expr``
    is a number, string, bool or None literal, a tuple/list of those (nested allowed), or
    constant arithmetic (``2**19``, ``3 * 1024``, ``-1e-3``); the other surfaces take the same
    literals. Skipped: assignments inside functions or compound statements, unpacking, chained
    ``A = B = 1``, calls, names, f-strings, any name bound more than once in module scope, and
    any value another line may override. ``path``: as for ``scan_parameters``. Raises
    ``PatchError`` on a syntax error.
    """
    if bundle.is_bundle(source):
        files = bundle.unpack(source)
        script, *others = files
        return [*discover_constants(files[script], script),
                *(replace(c, name=bundle.qualified(p, c.name))
                  for p in others for c in discover_constants(files[p], p))]
    if config_format(path) is not None:
        return list(scan_parameters(source, path).found)
    return [c for c, _ in _parsed(source)[1].entries]


def _scan_bundle(source: str) -> Scan:
    """A target of several files (``bundle.py``): the script's scan, with the settings and
    skipped values of each other file, scanned by its own surface, named by its path."""
    files = bundle.unpack(source)
    script, *others = files
    scan = scan_parameters(files[script], script)
    found, skipped = list(scan.found), list(scan.skipped)
    for path in others:
        try:
            more = scan_parameters(files[path], path)
        except PatchError as exc:
            raise PatchError(f"{path}: {exc.message}", hint=exc.hint) from None
        found += [replace(c, name=bundle.qualified(path, c.name)) for c in more.found]
        skipped += [replace(s, name=bundle.qualified(path, s.name)) for s in more.skipped]
    return replace(scan, found=tuple(found), skipped=tuple(skipped))


def _apply_bundle(source: str, changes: Mapping[str, object]) -> str:
    """Each file of a bundle patched by its own surface with the changes named for it."""
    files = bundle.unpack(source)
    for path, inner in bundle.split_changes(changes, list(files)).items():
        try:
            files[path] = apply_changes(files[path], inner, path)
        except PatchError as exc:
            raise PatchError(f"{path}: {exc.message}", hint=exc.hint) from None
    return bundle.pack(files)


@functools.lru_cache(maxsize=8)
def _parsed(source: str) -> tuple[cst.Module, _Collected]:
    """``source`` parsed, and what ``_collect`` finds in it. Cached: the loop patches the same
    best source again and again, and reads each patched one back (it is the next base when
    kept); libcst trees are immutable and the callers only read what was collected."""
    module = parse_source(source)
    return module, _collect(module)


# -- patching ------------------------------------------------------------------------------------


class _Replace(cst.CSTTransformer):
    """Replaces the value nodes found by ``_collect`` (by identity); ``matched`` counts them."""

    def __init__(self, new: Mapping[int, tuple[str, cst.BaseExpression]]):
        super().__init__()
        self.new = dict(new)
        self.matched: Counter[str] = Counter()

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode):  # type: ignore[override]
        hit = self.new.get(id(original_node))
        if hit is None:
            return updated_node
        self.matched[hit[0]] += 1
        return hit[1]


def apply_changes(source: str, changes: Mapping[str, object], path: str | None = None) -> str:
    """``source`` with the values of the named parameters replaced; every other byte kept.
    ``path``: the target's file; a config file is edited by ``configfiles.apply_config``.

    Raises ``PatchError`` when a name is not a parameter (see ``discover_constants``), is bound
    more than once in module scope or may be overridden elsewhere, or a value cannot be written
    as a literal.
    """
    if not changes:
        return source
    if bundle.is_bundle(source):
        return _apply_bundle(source, changes)
    fmt = config_format(path)
    if fmt is not None:
        return apply_config(source, changes, fmt)
    module, collected = _parsed(source)
    by_name = {c.name: (c, node) for c, node in collected.entries}
    counts = collected.counts
    for name in changes:
        if name in by_name:
            continue
        if counts[name] > 1:
            raise PatchError(
                f"{name} is assigned {counts[name]} times in module scope; arx rewrites only a "
                "constant assigned exactly once",
                hint=f"keep a single top-level `{name} = ...` in the target",
            )
        skip = next((s for s in collected.skipped if s.name == name), None)
        if skip is not None:
            raise PatchError(f"{name} (line {skip.line}) is not a parameter arx can rewrite: "
                             f"{skip.reason}")
        raise PatchError(
            f"{name} is not a parameter of the target (a top-level constant, argparse default, "
            f"config field, dict entry, call keyword or function default)"
            f"{close_hint(name, by_name)}"
        )
    new = {}
    for name, value in changes.items():
        constant, node = by_name[name]
        expression = parse_expression(render_value(value, like=constant.source), module)
        if name in collected.implied:  # a store_true/false switch: write its default=
            expression = add_keyword(cst.ensure_type(node, cst.Call), "default", expression,
                                     after="action")
        new[id(node)] = (name, expression)
    transformer = _Replace(new)
    patched = module.visit(transformer)
    ensure_once(transformer.matched, changes, "constant")
    result = patched.code
    if _constants_read_back(result, changes, collected):
        return result
    check = {c.name: c.value for c in discover_constants(result)}
    for name, value in changes.items():  # the patch must read back as exactly what was asked
        if name not in check or repr(check[name]) != repr(value):
            raise PatchError(f"patching {name} to {value!r} did not round-trip")
    return result


def _constants_read_back(result: str, changes: Mapping[str, object],
                         collected: _Collected) -> bool:
    """The read-back of a patch that changed top-level constants only: ``result`` parsed again
    and each changed ``NAME = literal`` evaluated, without the whole discovery (``_collect``,
    about 85% of a patch's time on a short script, run for every trial while most are
    discarded). Replacing value nodes leaves the bindings and the other surfaces as the base's
    discovery found them, so what is left to check is that the text parses and each new value
    reads back as asked. False (never a guess) for any other surface, a switch's implied
    default, or a value that does not read back: the full read-back then decides, as before."""
    constants = {c.name for c, _ in collected.entries if c.surface == CONSTANT}
    if not set(changes) <= constants or set(changes) & collected.implied:
        return False
    found: dict[str, object] = {}
    for line in parse_source(result).body:
        if not isinstance(line, cst.SimpleStatementLine):
            continue
        for stmt in line.body:
            target = _constant_target(stmt)
            if target is None or target[0] not in changes:
                continue
            if target[0] in found:
                return False
            try:
                found[target[0]] = evaluate(target[1])
            except NotConstant:
                return False
    return all(name in found and repr(found[name]) == repr(value)
               for name, value in changes.items())
