"""Settings written inside code rather than in a block of constants: call keywords and
function defaults (``constants.py`` rewrites them; this module only finds them).

- call keywords: ``HistGradientBoostingClassifier.learning_rate`` for a literal
  ``HistGradientBoostingClassifier(learning_rate=0.1)`` anywhere in the module (module level or
  inside functions), ``LBFGS.lr`` for ``optim.LBFGS(params, lr=0.8)``: the callee's last name,
  then the keyword. A call counts when its callee is a class (its name starts with a capital:
  estimators, optimisers, layers, schedulers, ``DataLoader``, ``Trainer``), a function the
  script defines, or ``fit``/``train``; ``print(end="")``, ``torch.sum(x, dim=1)`` and
  ``os.makedirs(exist_ok=True)`` are code, not settings. When the same callee has literal
  keywords in two calls, each is named by its place among them in the file: ``Linear#1.bias``,
  ``Linear#2.bias``. Positional literals (``nn.LSTMCell(1, 51)``) are not settings: their
  meaning is their position. Calls inside a class (a model's ``nn.Linear(dim, dim,
  bias=False)``, an optimiser's own steps) are its internals, not the script's settings: they
  are left out.
- function defaults: ``main.lr`` for ``def main(lr=0.1)`` at module level when every call of
  ``main`` in the script leaves ``lr`` out (``main()`` under ``__main__``). When a call passes
  ``lr=0.2`` instead, that keyword is what takes effect: it is the setting (same name,
  ``main.lr``) and the default is skipped, saying so. A function also called from inside a
  class (an algorithm a model or an optimiser uses) is skipped, saying so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

import libcst as cst

from arx.core.codemods.common import dotted, excerpt
from arx.core.codemods.surfaces import Found, Miss, literal_ok

__all__ = ["CALL", "DEFAULT", "find_call_keywords", "find_defaults"]

CALL = "call"
DEFAULT = "default"

#: library functions (last name) whose keywords are training settings
_FUNCTIONS = frozenset({"fit", "train"})
#: callees another surface reads (argparse, dict(...), field(...)) or that hold no settings
_NOT_CALLEES = frozenset({"add_argument", "set_defaults", "dict", "field", "ib", "attrib",
                          "Field", "ArgumentParser", "Path", "PurePath", "PurePosixPath"})
#: keywords that say how code is shaped or where it writes, never what it learns
_NOT_SETTINGS = frozenset({"dim", "axis", "keepdim", "keepdims", "batch_first", "exist_ok",
                           "end", "sep", "flush", "file", "encoding", "mode", "indent",
                           "non_blocking", "inplace", "parents", "strict", "requires_grad",
                           "description", "help", "name", "dtype"})

LineOf = Callable[[cst.CSTNode], int]


class _Calls(cst.CSTVisitor):
    """Every call outside class bodies, in source order, by callee name; and the names called
    from inside a class (``in_classes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[cst.Call] = []
        self.by_name: dict[str, list[cst.Call]] = defaultdict(list)
        self.in_classes: set[str] = set()
        self._classes = 0

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes += 1

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._classes -= 1

    def visit_Call(self, node: cst.Call) -> None:
        if self._classes:
            if isinstance(node.func, cst.Name):
                self.in_classes.add(node.func.value)
            return
        self.calls.append(node)
        if isinstance(node.func, cst.Name):
            self.by_name[node.func.value].append(node)


def _module_functions(module: cst.Module, counts: Mapping[str, int]) -> dict[str, cst.FunctionDef]:
    """Module-level ``def``s whose name is bound only there."""
    return {s.name.value: s for s in module.body
            if isinstance(s, cst.FunctionDef) and counts.get(s.name.value, 0) == 1}


def _callee(call: cst.Call, functions: Mapping[str, cst.FunctionDef]) -> str | None:
    """The last name of a call whose keywords may be settings, else None."""
    last = dotted(call.func).rsplit(".", 1)[-1]
    if not last or last in _NOT_CALLEES:
        return None
    if last[0].isupper() or last in _FUNCTIONS or (isinstance(call.func, cst.Name)
                                                   and last in functions):
        return last
    return None


def _settings(call: cst.Call) -> list[cst.Arg]:
    return [a for a in call.args if a.keyword is not None and not a.star
            and a.keyword.value not in _NOT_SETTINGS and literal_ok(a.value)]


def find_call_keywords(module: cst.Module, counts: Mapping[str, int], found: list[Found],
                       missed: list[Miss]) -> None:
    """Literal keywords of calls (see the module docstring), in source order."""
    del missed  # a non-literal keyword (lr=args.lr) is code reading a setting, not one to name
    visitor = _Calls()
    module.visit(visitor)
    functions = _module_functions(module, counts)
    named = [(c, _callee(c, functions)) for c in visitor.calls]
    named = [(c, n) for c, n in named if n is not None and _settings(c)]
    total: dict[str, int] = defaultdict(int)
    for _, name in named:
        total[name] += 1  # type: ignore[index]
    seen: dict[str, int] = defaultdict(int)
    for call, name in named:
        assert name is not None
        seen[name] += 1
        prefix = name if total[name] == 1 else f"{name}#{seen[name]}"
        for arg in _settings(call):
            assert arg.keyword is not None
            found.append(Found(f"{prefix}.{arg.keyword.value}", CALL, arg.value, arg))


def _params(fn: cst.FunctionDef) -> tuple[list[cst.Param], list[cst.Param]]:
    """(the parameters a positional argument can fill, the keyword-only ones)."""
    p = fn.params
    return [*p.posonly_params, *p.params], list(p.kwonly_params)


def find_defaults(module: cst.Module, counts: Mapping[str, int], line_of: LineOf,
                  found: list[Found], missed: list[Miss]) -> None:
    """Literal defaults of module-level functions the script calls without that argument."""
    visitor = _Calls()
    module.visit(visitor)
    for fn_name, fn in _module_functions(module, counts).items():
        calls = visitor.by_name.get(fn_name, [])
        positional, kwonly = _params(fn)
        for index, param in [*enumerate(positional), *((None, p) for p in kwonly)]:
            if param.default is None:
                continue
            name = f"{fn_name}.{param.name.value}"
            if not calls and fn_name not in visitor.in_classes:
                continue  # never called here: not a setting of this script
            if fn_name in visitor.in_classes:
                missed.append(Miss(name, param, "called from inside a class: an internal of "
                                                "the code that class holds"))
                continue
            if not literal_ok(param.default):
                code = module.code_for_node(param.default)
                missed.append(Miss(name, param, f"default is not a literal ({excerpt(code)})"))
                continue
            starred = next((c for c in calls if any(a.star for a in c.args)), None)
            if starred is not None:
                missed.append(Miss(name, param, f"called with *args/**kwargs at line "
                                                f"{line_of(starred)}"))
                continue
            passing = [c for c in calls if _passes(c, param.name.value, index)]
            if not passing:
                found.append(Found(name, DEFAULT, param.default, param))
            elif len(passing) < len(calls):
                missed.append(Miss(name, param, f"the call at line {line_of(passing[0])} passes "
                                                f"it and another does not"))
            else:
                arg = next((a for a in passing[0].args if a.keyword is not None
                            and a.keyword.value == param.name.value), None)
                where = f"the call at line {line_of(passing[0])}"
                if arg is not None and len(calls) == 1 and literal_ok(arg.value):
                    missed.append(Miss(name, param, f"{where} passes it, so that keyword is "
                                                    f"what takes effect and what arx tunes"))
                else:
                    missed.append(Miss(name, param, f"{where} passes it: the default never "
                                                    "takes effect"))


def _passes(call: cst.Call, param: str, index: int | None) -> bool:
    """Whether ``call`` gives parameter ``param`` (at position ``index``) a value."""
    if any(a.keyword is not None and a.keyword.value == param for a in call.args):
        return True
    given = sum(1 for a in call.args if a.keyword is None and not a.star)
    return index is not None and index < given
