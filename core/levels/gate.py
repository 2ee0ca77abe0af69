"""The Level-2 validation gate: may this patched ``runner/runner.py`` become the active runner?

Four steps, in order, stopping at the first failure; each returns a ``GateStep`` with a reason:

1. **parse**: libcst and ``compile()``.
2. **ruff**: pyflakes errors and syntax (``ruff check --isolated --select F,E9``), in a subprocess.
3. **safety**: an AST allow-list. The runner runs inside the arx process, next to the API key, so
   it may import only pure-computation standard modules (``ALLOWED_MODULES``) and what the
   template itself imports, and may not reach the interpreter's escape hatches (``open``,
   ``eval``, ``__import__``, ``().__class__.__bases__``, frame objects, ``str.format``, ...).
4. **smoke**: ``runner/test_smoke.py`` (rendered from ``runner_repo/test_smoke.py.tmpl`` after the
   patch is applied) runs under pytest in its own process group, killed whole at the time limit,
   with no secrets in its environment (``scrub_env`` for untrusted code); it drives the runner
   through simulated iterations and checks every hook's contract and the mechanism's
   integration. The test reports back through a file named by the gate and stamped with a
   nonce, so a runner cannot fake a pass.

A gate never raises for a bad runner: it returns a ``GateResult`` (like a trial result).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

import libcst

from arx.core.execution.env import scrub_env
from arx.core.execution.process import kill_group, start_group
from arx.core.repo.paths import RUNNER_PATH, SMOKE_PATH

__all__ = [
    "ALLOWED_MODULES",
    "GateResult",
    "GateStep",
    "check_safety",
    "hook_limit",
    "render_smoke_test",
    "run_gate",
]

#: the tests the smoke template defines; all must report ok
SMOKE_TESTS = ("test_runner_loads", "test_drive_min", "test_drive_max_confirm")
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


@dataclass(frozen=True)
class GateStep:
    """One step's verdict. ``reason`` is empty when ok; ``details`` holds the full output."""

    name: str
    ok: bool
    reason: str
    seconds: float
    details: str = ""


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: ok iff every step ran and passed."""

    ok: bool
    steps: tuple[GateStep, ...]

    @property
    def reason(self) -> str:
        """The first failing step as ``name: reason`` (empty when ok)."""
        failed = next((s for s in self.steps if not s.ok), None)
        return f"{failed.name}: {failed.reason}" if failed else ""

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def step(self, name: str) -> GateStep | None:
        return next((s for s in self.steps if s.name == name), None)

    def summary(self) -> str:
        """One line for a commit trailer, e.g. ``pass (parse 0.02s, ruff 0.03s, ...)``."""
        times = ", ".join(f"{s.name} {s.seconds:.2f}s" for s in self.steps)
        return f"{'pass' if self.ok else 'fail: ' + self.reason} ({times})"

    def describe(self) -> str:
        """Several lines for a revert message: each step, then the failing step's details."""
        lines = [f"gate {'passed' if self.ok else 'refused'} in {self.seconds:.2f}s"]
        for s in self.steps:
            lines.append(f"  {s.name:<7} {'ok' if s.ok else 'FAIL'} {s.seconds:6.2f}s  {s.reason}"
                         .rstrip())
        failed = next((s for s in self.steps if not s.ok), None)
        if failed and failed.details:
            lines += ["", failed.details.rstrip()[-4000:]]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "seconds": round(self.seconds, 3),
                "steps": [{"name": s.name, "ok": s.ok, "reason": s.reason,
                           "seconds": round(s.seconds, 3)} for s in self.steps]}


def run_gate(runner_source: str, workdir: Path, mechanism: str | None = None,
             timeout_s: float = 60, template_source: str | None = None, *,
             methods: Sequence[str] = (), iterations: int = 8,
             drop_env: Sequence[str] = ()) -> GateResult:
    """Validate ``runner_source`` in the scratch checkout ``workdir``.

    Writes ``runner/runner.py`` and ``runner/test_smoke.py`` there (nothing else). ``mechanism``
    is the helper class that must be integrated (created and called by the runner); ``methods``
    are new Runner methods that the simulated iterations must reach (see
    ``mechanism.new_method_names``). A ``mechanism`` with no class of that name (e.g. only
    replace_method patches) needs no integration check: a replaced hook is reached by itself.
    ``template_source`` is the runner template whose imports are allowed (default: the packaged
    ``runner.py``). ``drop_env`` names variables the smoke test must not see besides those
    ``scrub_env`` withholds from untrusted code anyway (the run's LLM key names).
    """
    workdir = Path(workdir)
    steps: list[GateStep] = []
    checks = (
        ("parse", lambda: _parse_step(runner_source)),
        ("ruff", lambda: _ruff_step(runner_source, workdir)),
        ("safety", lambda: _safety_step(runner_source, template_source)),
        ("smoke", lambda: _smoke_step(runner_source, workdir, mechanism, methods, timeout_s,
                                      iterations, drop_env)),
    )
    for name, check in checks:
        start = time.perf_counter()
        reason, details = check()
        steps.append(GateStep(name, not reason, reason, time.perf_counter() - start, details))
        if reason:
            break
    return GateResult(ok=all(s.ok for s in steps) and len(steps) == len(checks),
                      steps=tuple(steps))


# -- parse ---------------------------------------------------------------------------------------


def _parse_step(source: str) -> tuple[str, str]:
    try:
        libcst.parse_module(source)
    except libcst.ParserSyntaxError as e:
        return f"syntax error (line {e.raw_line}, column {e.raw_column + 1}): {e.message}", str(e)
    try:
        compile(source, RUNNER_PATH, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        line = getattr(e, "lineno", None)
        return f"{type(e).__name__}: {getattr(e, 'msg', e)}" + (
            f" (line {line})" if line else ""), ""
    return "", ""


# -- ruff ----------------------------------------------------------------------------------------


def _ruff_command() -> list[str]:
    try:
        from ruff.__main__ import find_ruff_bin

        return [find_ruff_bin()]
    except (ImportError, FileNotFoundError):
        return [sys.executable, "-m", "ruff"]


def _ruff_step(source: str, workdir: Path) -> tuple[str, str]:
    path = workdir / RUNNER_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    cmd = [*_ruff_command(), "check", "--isolated", "--select", "F,E9", "--output-format",
           "json", "--no-cache", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=workdir)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not run ruff: {e}", ""
    try:
        found = json.loads(proc.stdout or "[]")
    except ValueError:
        return f"ruff failed (exit {proc.returncode})", proc.stdout + proc.stderr
    if not found:
        return ("", "") if proc.returncode == 0 else (
            f"ruff failed (exit {proc.returncode})", proc.stderr)
    found.sort(key=lambda d: (d.get("location") or {}).get("row", 0))
    lines = [f"{d.get('code') or 'syntax'} {d.get('message')} "
             f"(line {(d.get('location') or {}).get('row')})" for d in found]
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return f"{lines[0]}{more}", "\n".join(lines)


# -- safety --------------------------------------------------------------------------------------


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


def _safety_step(source: str, template_source: str | None) -> tuple[str, str]:
    problems = check_safety(source, template_source)
    if not problems:
        return "", ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more, "\n".join(problems)


def check_safety(source: str, template_source: str | None = None) -> list[str]:
    """Every reason ``source`` may not run inside arx (empty: allowed), each with its line."""
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
            self._attr_name(node, name.value)

    def _attr_name(self, node: ast.AST, attr: str) -> None:
        if attr.startswith("__") and attr.endswith("__") and attr not in ALLOWED_DUNDERS:
            self.refuse(node, f"access to attribute {attr!r} is not allowed")
        elif attr in FORBIDDEN_ATTRS:
            self.refuse(node, f"access to attribute {attr!r} is not allowed")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._attr_name(node, node.attr)
        base = self._module_path(node.value)
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


# -- smoke ---------------------------------------------------------------------------------------


def hook_limit(timeout_s: float) -> float:
    """Seconds one hook call may take, for a gate with ``timeout_s``."""
    return round(max(0.5, min(5.0, timeout_s / 4)), 2)


def render_smoke_test(mechanism: str | None = None, methods: Sequence[str] = (),
                      iterations: int = 8, hook_limit_s: float = 5.0) -> str:
    """``runner/test_smoke.py`` for a runner whose latest mechanism is ``mechanism``."""
    text = files("arx.runner_repo").joinpath("test_smoke.py.tmpl").read_text(encoding="utf-8")
    return Template(text).substitute(
        mechanism=repr(mechanism), methods=repr(tuple(methods)), iterations=int(iterations),
        hook_limit=repr(float(hook_limit_s)),
    )


def _smoke_step(source: str, workdir: Path, mechanism: str | None, methods: Sequence[str],
                timeout_s: float, iterations: int, drop_env: Sequence[str]) -> tuple[str, str]:
    runner_dir = workdir / "runner"
    runner_dir.mkdir(parents=True, exist_ok=True)
    (runner_dir / "runner.py").write_text(source, encoding="utf-8")
    test = render_smoke_test(mechanism, methods, iterations, hook_limit(timeout_s))
    (workdir / SMOKE_PATH).write_text(test, encoding="utf-8")  # after the patch: it cannot touch it
    with tempfile.TemporaryDirectory(prefix="arx-gate-") as tmp:
        report = Path(tmp) / "report.json"
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        nonce = secrets.token_hex(16)
        env = scrub_env(drop_env, untrusted=True)
        env.update(PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
                   PYTHONHASHSEED="0", ARX_SMOKE_REPORT=str(report), ARX_SMOKE_NONCE=nonce)
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--noconftest",
               "-c", str(ini), "--rootdir", str(workdir), "--import-mode=importlib", SMOKE_PATH]
        output, returncode, timed_out = _run(cmd, workdir, env, timeout_s)
        data = _read_report(report, nonce)
    tail = output[-6000:]
    if timed_out:
        where = f" (in {data['current']})" if data and data.get("current") else ""
        return f"timed out after {timeout_s:g} s{where}", tail
    if data is None:
        last = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "")
        return f"pytest exited {returncode} without a report: {last}", tail
    results = data.get("tests") or {}
    for name in SMOKE_TESTS:
        result = results.get(name)
        if result is None:
            return f"{name} did not run", tail
        if not result.get("ok"):
            return str(result.get("reason") or "failed"), tail
    if returncode != 0:
        return f"pytest exited {returncode}", tail
    slowest = sorted((data.get("hooks") or {}).items(), key=lambda kv: -kv[1])
    timing = "slowest call per hook: " + ", ".join(f"{k} {v:.4f}s" for k, v in slowest)
    return "", f"{timing}\n{tail}"


def _run(cmd: list[str], cwd: Path, env: dict[str, str],
         timeout_s: float) -> tuple[str, int | None, bool]:
    """(output, exit code or None after a timeout, timed out). The smoke test runs in its own
    process group; at the time limit the whole group is killed, and after a normal exit
    whatever it left running."""
    proc = start_group(cmd, cwd, env, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, proc)
        out, _ = proc.communicate()
        return out or "", None, True
    kill_group(proc.pid, proc)
    return out or "", proc.returncode, False


def _read_report(path: Path, nonce: str) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("nonce") != nonce:
        return None
    return data
