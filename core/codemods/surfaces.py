"""Config surfaces beyond top-level constants: argparse defaults, class fields, dict entries.

Each surface finds literal values in a parsed module and names them so that a name says where
its value lives (``constants.py`` rewrites them; this module only finds them):

- argparse: ``parser.add_argument("--lr", type=float, default=0.01)`` anywhere in the module is
  ``--lr`` (the first long option as written; the value is the ``default=``); a
  ``store_true``/``store_false`` switch without ``default=`` is a bool whose value its action
  implies (a rewrite writes the explicit ``default=``);
- class fields: ``Args.learning_rate`` for ``learning_rate: float = 2.5e-4`` (or
  ``= field(default=...)``, ``attr.ib(default=...)``, ``Field(...)``) in the body of a
  module-level class that is a config: a dataclass, attrs or pydantic class, or a class whose
  body holds no methods;
- dict entries: ``params.n_estimators`` for a module-level ``params = {"n_estimators": 500}`` or
  ``config = dict(lr=3e-4)``; nested dicts give ``config.optim.lr``.

A value that another line may override is skipped with the reason (assigned twice, changed by
``set_defaults``, ``params["x"] = ...``, ``params.update(...)``, a ``**spread`` after it).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import libcst as cst

from arx.core.codemods.common import dotted, excerpt
from arx.core.codemods.values import NotConstant, evaluate

__all__ = ["ARGPARSE", "DICT", "FIELD", "Found", "Miss", "argparse_dests", "find_surfaces",
           "literal_ok"]

ARGPARSE = "argparse"
FIELD = "field"
DICT = "dict"

#: decorators (last name) and bases that make a class a config whatever else it holds
_CONFIG_DECORATORS = {"dataclass", "define", "frozen", "mutable", "s", "attrs"}
_CONFIG_BASES = {"BaseModel", "BaseSettings", "NamedTuple"}
#: calls in a class body whose ``default=`` is the field's value
_FIELD_CALLS = {"field", "ib", "attrib", "Field"}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Found:
    """A literal value a surface found: its name, its value node, and what the surface knows."""

    name: str
    surface: str
    node: cst.BaseExpression
    #: the statement or call it belongs to (its line and trailing comment)
    anchor: cst.CSTNode
    annotation: str | None = None
    #: argparse ``type=float`` or a ``float`` annotation: an int default is a float parameter
    as_float: bool = False
    choices: tuple | None = None
    #: a ``store_true``/``store_false`` flag without ``default=``: the value its action implies
    #: (``node`` is then the call, and a rewrite inserts ``default=``)
    implied: bool | None = None


@dataclass(frozen=True)
class Miss:
    """A value a surface saw but cannot tune, and why."""

    name: str
    anchor: cst.CSTNode
    reason: str


def _string(node: cst.BaseExpression) -> str | None:
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _kwarg(call: cst.Call, name: str) -> cst.Arg | None:
    return next((a for a in call.args if a.keyword is not None and a.keyword.value == name), None)


def _literal(node: cst.BaseExpression) -> tuple[bool, object]:
    try:
        return True, evaluate(node)
    except NotConstant:
        return False, None


def literal_ok(node: cst.BaseExpression) -> bool:
    """Whether ``node`` is a literal ``values.evaluate`` reads."""
    return _literal(node)[0]


# -- argparse ------------------------------------------------------------------------------------


class _ArgparseCalls(cst.CSTVisitor):
    """Every ``X.add_argument(...)`` and ``X.set_defaults(...)`` call, anywhere in the module."""

    def __init__(self) -> None:
        super().__init__()
        self.adds: list[cst.Call] = []
        self.set_defaults: dict[str, cst.Call] = {}

    def visit_Call(self, node: cst.Call) -> None:
        if not isinstance(node.func, cst.Attribute):
            return
        if node.func.attr.value == "add_argument":
            self.adds.append(node)
        elif node.func.attr.value == "set_defaults":
            for arg in node.args:
                if arg.keyword is not None:
                    self.set_defaults[arg.keyword.value] = node


def _option_name(call: cst.Call) -> tuple[str | None, str | None]:
    """(name, dest) of an ``add_argument`` call: the first long option, else the first short."""
    flags = []
    for arg in call.args:
        if arg.keyword is not None or arg.star:
            break
        text = _string(arg.value)
        if text is None:
            return None, None
        flags.append(text)
    options = [f for f in flags if f.startswith("-")]
    if not options:
        return None, None  # a positional argument
    name = next((f for f in options if f.startswith("--")), options[0])
    dest_arg = _kwarg(call, "dest")
    dest = _string(dest_arg.value) if dest_arg is not None else None
    return name, dest or name.lstrip("-").replace("-", "_")


def argparse_dests(module: cst.Module) -> dict[str, str]:
    """dest -> option name of every ``add_argument`` option (``nhead`` -> ``--nhead``)."""
    calls = _ArgparseCalls()
    module.visit(calls)
    out = {}
    for call in calls.adds:
        name, dest = _option_name(call)
        if name is not None and dest is not None:
            out[dest] = name
    return out


def _argparse(module: cst.Module, found: list[Found], missed: list[Miss]) -> None:
    calls = _ArgparseCalls()
    module.visit(calls)
    seen: dict[str, list[cst.Call]] = defaultdict(list)
    for call in calls.adds:
        name, _ = _option_name(call)
        if name is not None:
            seen[name].append(call)
    for name, group in seen.items():
        call = group[0]
        _, dest = _option_name(call)
        if len(group) > 1:
            missed.append(Miss(name, call, f"defined {len(group)} times"))
            continue
        if dest in calls.set_defaults:
            missed.append(Miss(name, call, "overridden by parser.set_defaults"))
            continue
        default = _kwarg(call, "default")
        if default is None:
            action = _kwarg(call, "action")
            kind = _string(action.value) if action is not None else None
            if kind in ("store_true", "store_false"):  # a kept flip writes default=
                found.append(Found(name, ARGPARSE, call, call, implied=kind == "store_false"))
            else:
                missed.append(Miss(name, call, "no default="))
            continue
        ok, value = _literal(default.value)
        if not ok:
            code = module.code_for_node(default.value)
            missed.append(Miss(name, call, f"default is not a literal ({excerpt(code)})"))
            continue
        type_arg = _kwarg(call, "type")
        as_float = type_arg is not None and dotted(type_arg.value) == "float"
        choices = None
        choices_arg = _kwarg(call, "choices")
        if choices_arg is not None:
            ok, options = _literal(choices_arg.value)
            if ok and isinstance(options, (list, tuple)) and len(options) > 1:
                choices = tuple(options)
        found.append(Found(name, ARGPARSE, default.value, call, as_float=as_float,
                           choices=choices))


# -- class fields --------------------------------------------------------------------------------


def _is_config_class(node: cst.ClassDef) -> bool:
    for deco in node.decorators:
        if dotted(deco.decorator).rsplit(".", 1)[-1] in _CONFIG_DECORATORS:
            return True
    for base in node.bases:
        if dotted(base.value).rsplit(".", 1)[-1] in _CONFIG_BASES:
            return True
    body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
    return not any(isinstance(s, (cst.FunctionDef, cst.ClassDef)) for s in body)


def _field_value(value: cst.BaseExpression) -> cst.BaseExpression | None:
    """The expression holding a field's default: the value, or ``default=`` of field(...)."""
    if isinstance(value, cst.Call) and dotted(value.func).rsplit(".", 1)[-1] in _FIELD_CALLS:
        arg = _kwarg(value, "default")
        if arg is None and dotted(value.func).endswith("Field") and value.args \
                and value.args[0].keyword is None and not value.args[0].star:
            arg = value.args[0]  # pydantic: Field(0.1, ...)
        return arg.value if arg is not None else None
    return value


def _class_fields(module: cst.Module, counts: Mapping[str, int], found: list[Found],
                  missed: list[Miss]) -> None:
    for cls in module.body:
        if not isinstance(cls, cst.ClassDef) or not _is_config_class(cls):
            continue
        prefix = cls.name.value
        entries: list[tuple[str, cst.BaseSmallStatement, cst.BaseExpression, str | None]] = []
        bound: Counter[str] = Counter()
        for line in cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ():
            if not isinstance(line, cst.SimpleStatementLine):
                continue
            for stmt in line.body:
                if isinstance(stmt, cst.AnnAssign) and isinstance(stmt.target, cst.Name):
                    annotation = module.code_for_node(stmt.annotation.annotation)
                    if stmt.value is not None:
                        entries.append((stmt.target.value, stmt, stmt.value, annotation))
                        bound[stmt.target.value] += 1
                elif isinstance(stmt, cst.Assign):
                    for target in stmt.targets:
                        if isinstance(target.target, cst.Name):
                            bound[target.target.value] += 1
                    if len(stmt.targets) == 1 and isinstance(stmt.targets[0].target, cst.Name):
                        entries.append((stmt.targets[0].target.value, stmt, stmt.value, None))
                elif isinstance(stmt, cst.AugAssign) and isinstance(stmt.target, cst.Name):
                    bound[stmt.target.value] += 1
        for field_name, stmt, value, annotation in entries:
            name = f"{prefix}.{field_name}"
            if counts.get(prefix, 0) > 1:
                missed.append(Miss(name, stmt, f"class {prefix} is defined more than once"))
                continue
            if bound[field_name] > 1:
                missed.append(Miss(name, stmt, f"assigned {bound[field_name]} times in the class"))
                continue
            node = _field_value(value)
            ok = node is not None and _literal(node)[0]
            if not ok:
                code = module.code_for_node(value)
                missed.append(Miss(name, stmt, f"not a literal ({excerpt(code)})"))
                continue
            assert node is not None
            found.append(Found(name, FIELD, node, stmt, annotation=annotation,
                               as_float=annotation is not None and annotation.strip() == "float"))


# -- dict entries --------------------------------------------------------------------------------


class _DictMutations(cst.CSTVisitor):
    """``NAME["key"] = ...`` and ``NAME.update(...)`` anywhere: values changed after the literal."""

    def __init__(self, names: set[str]):
        super().__init__()
        self.names = names
        #: dict name -> key -> reason ('*' for every key)
        self.changed: dict[str, dict[str, str]] = defaultdict(dict)

    def _subscript(self, target: cst.BaseExpression) -> None:
        if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name) \
                and target.value.value in self.names and len(target.slice) == 1:
            index = target.slice[0].slice
            key = _string(index.value) if isinstance(index, cst.Index) else None
            self.changed[target.value.value][key or "*"] = "assigned again (NAME[key] = ...)"

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._subscript(target.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._subscript(node.target)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not (isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name)
                and func.value.value in self.names
                and func.attr.value in ("update", "setdefault", "pop", "__setitem__")):
            return
        name, reason = func.value.value, f"changed by {func.value.value}.{func.attr.value}(...)"
        keys: list[str] = []
        for arg in node.args:
            if arg.keyword is not None:
                keys.append(arg.keyword.value)
            elif isinstance(arg.value, cst.Dict) and not arg.star:
                keys.extend(_string(e.key) or "*" for e in arg.value.elements
                            if isinstance(e, cst.DictElement))
            elif func.attr.value != "update" and _string(arg.value) is not None:
                keys.append(_string(arg.value) or "*")
                break
            else:
                keys.append("*")
        for key in keys:
            self.changed[name][key] = reason


def _dict_items(node: cst.BaseExpression) -> Iterator[tuple[str | None, cst.CSTNode,
                                                            cst.BaseExpression | None, bool]]:
    """(key, anchor, value, a spread follows) of a dict literal or ``dict(...)`` call."""
    if isinstance(node, cst.Dict):
        elements = list(node.elements)
        for k, e in enumerate(elements):
            if isinstance(e, cst.DictElement):
                spread = any(isinstance(x, cst.StarredDictElement) for x in elements[k + 1:])
                yield _string(e.key), e, e.value, spread
    elif isinstance(node, cst.Call) and dotted(node.func) == "dict":
        args = list(node.args)
        for k, a in enumerate(args):
            if a.keyword is not None:
                spread = any(x.star for x in args[k + 1:])
                yield a.keyword.value, a, a.value, spread


def _is_dict(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Dict) or (isinstance(node, cst.Call)
                                          and dotted(node.func) == "dict")


def _walk_dict(module: cst.Module, prefix: str, node: cst.BaseExpression,
               changed: Mapping[str, str], found: list[Found], missed: list[Miss]) -> None:
    keys = Counter(k for k, _, _, _ in _dict_items(node) if k is not None)
    for key, anchor, value, spread in _dict_items(node):
        if key is None or value is None:
            continue
        name = f"{prefix}.{key}"
        if not _KEY.match(key):
            missed.append(Miss(name, anchor, "the key is not a plain name"))
        elif keys[key] > 1:
            missed.append(Miss(name, anchor, f"the key appears {keys[key]} times"))
        elif spread:
            missed.append(Miss(name, anchor, "a **spread after it may override it"))
        elif key in changed or "*" in changed:
            missed.append(Miss(name, anchor, changed.get(key) or changed["*"]))
        elif _is_dict(value):
            _walk_dict(module, name, value, {}, found, missed)
        elif _literal(value)[0]:
            found.append(Found(name, DICT, value, anchor))
        else:
            missed.append(Miss(name, anchor, f"not a literal ({excerpt(module.code_for_node(value))})"))


def _dicts(module: cst.Module, counts: Mapping[str, int], found: list[Found],
           missed: list[Miss]) -> None:
    tops: list[tuple[str, cst.BaseExpression]] = []
    for line in module.body:
        if not isinstance(line, cst.SimpleStatementLine):
            continue
        for stmt in line.body:
            if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1 \
                    and isinstance(stmt.targets[0].target, cst.Name) and _is_dict(stmt.value):
                tops.append((stmt.targets[0].target.value, stmt.value))
            elif isinstance(stmt, cst.AnnAssign) and isinstance(stmt.target, cst.Name) \
                    and stmt.value is not None and _is_dict(stmt.value):
                tops.append((stmt.target.value, stmt.value))
    mutations = _DictMutations({name for name, _ in tops})
    module.visit(mutations)
    for name, node in tops:
        if counts.get(name, 0) > 1:
            for key, anchor, _, _ in _dict_items(node):
                if key is not None:
                    missed.append(Miss(f"{name}.{key}", anchor,
                                       f"{name} is assigned {counts[name]} times"))
            continue
        _walk_dict(module, name, node, mutations.changed.get(name, {}), found, missed)


def find_surfaces(module: cst.Module, counts: Mapping[str, int]) -> tuple[list[Found], list[Miss]]:
    """The argparse defaults, class fields and dict entries of ``module``, in that order, and
    what was seen but skipped. ``counts``: module-scope bindings (``ModuleBindings``)."""
    found: list[Found] = []
    missed: list[Miss] = []
    _argparse(module, found, missed)
    _class_fields(module, counts, found, missed)
    _dicts(module, counts, found, missed)
    return found, missed
