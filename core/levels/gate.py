"""The Level-2 validation gate: may this patched ``runner/runner.py`` become the active runner?

Four steps, in order, stopping at the first failure; each returns a ``GateStep`` with a reason:

1. **parse**: libcst and ``compile()``.
2. **ruff**: pyflakes errors and syntax (``ruff check --isolated --select F,E9``), in a subprocess.
3. **safety**: an AST allow-list, fast feedback for the LLM (the boundary is the worker the
   runner runs in, ``worker.py``): it may import only pure-computation standard modules
   (``ALLOWED_MODULES``) and what the template itself imports, and may not reach the
   interpreter's escape hatches (``open``, ``eval``, ``__import__``, ``().__class__.__bases__``,
   frame objects, ``str.format``, private attributes of anything but ``self``/``cls``, a
   submodule bound by ``from pkg import mod`` used past its allow-list, ...).
4. **smoke**: ``runner/test_smoke.py`` (rendered from ``runner_repo/test_smoke.py.tmpl`` after the
   patch is applied) runs under pytest in its own process group, killed whole at the time limit,
   with an environment from an allow-list (``allowed_env``: none of the user's variables, a
   home of its own); it drives the runner,
   in the same sandboxed worker the engine uses, through simulated iterations and checks every
   hook's contract and the mechanism's integration. The test reports back through a file named by
   the gate and stamped with a nonce, so a runner cannot fake a pass; both reach the test's own
   process only (the worker it starts sees the same allow-listed environment as a run's, so
   nothing there tells the gate from a run).

A gate never raises for a bad runner: it returns a ``GateResult`` (like a trial result).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

import libcst

from arx.core.codemods.untrusted import check_shape
from arx.core.errors import PatchError
from arx.core.execution.env import allowed_env
from arx.core.execution.process import kill_group, start_group
from arx.core.levels.safety import ALLOWED_MODULES, check_safety
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
             drop_env: Sequence[str] = (), rules: int = 1) -> GateResult:
    """Validate ``runner_source`` in the scratch checkout ``workdir``.

    Writes ``runner/runner.py`` and ``runner/test_smoke.py`` there (nothing else). ``mechanism``
    is the helper class that must be integrated (created and called by the runner); ``methods``
    are new Runner methods that the simulated iterations must reach (see
    ``mechanism.new_method_names``). A ``mechanism`` with no class of that name (e.g. only
    replace_method patches) needs no integration check: a replaced hook is reached by itself.
    ``template_source`` is the runner template whose imports are allowed (default: the packaged
    ``runner.py``). ``drop_env`` (the run's LLM key names) is kept for its callers: the smoke
    test's environment is an allow-list (``allowed_env``) that holds none of them anyway.
    ``rules``: the run's; the smoke drive constructs the runner with them, as the engine does,
    and from 7 gives each context the ``moves`` that mechanisms' ``allows`` is asked about.
    """
    workdir = Path(workdir)
    steps: list[GateStep] = []
    checks = (
        ("parse", lambda: _parse_step(runner_source)),
        ("ruff", lambda: _ruff_step(runner_source, workdir)),
        ("safety", lambda: _safety_step(runner_source, template_source)),
        ("smoke", lambda: _smoke_step(runner_source, workdir, mechanism, methods, timeout_s,
                                      iterations, drop_env, rules)),
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
        check_shape(source, "runner")
    except PatchError as e:
        return e.message, ""
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


def _safety_step(source: str, template_source: str | None) -> tuple[str, str]:
    problems = check_safety(source, template_source)
    if not problems:
        return "", ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more, "\n".join(problems)


# -- smoke ---------------------------------------------------------------------------------------


def hook_limit(timeout_s: float) -> float:
    """Seconds one hook call may take, for a gate with ``timeout_s``."""
    return round(max(0.5, min(5.0, timeout_s / 4)), 2)


def render_smoke_test(mechanism: str | None = None, methods: Sequence[str] = (),
                      iterations: int = 8, hook_limit_s: float = 5.0, rules: int = 1) -> str:
    """``runner/test_smoke.py`` for a runner whose latest mechanism is ``mechanism``."""
    text = files("arx.runner_repo").joinpath("test_smoke.py.tmpl").read_text(encoding="utf-8")
    return Template(text).substitute(
        mechanism=repr(mechanism), methods=repr(tuple(methods)), iterations=int(iterations),
        hook_limit=repr(float(hook_limit_s)), rules=int(rules),
    )


def _smoke_step(source: str, workdir: Path, mechanism: str | None, methods: Sequence[str],
                timeout_s: float, iterations: int, drop_env: Sequence[str],
                rules: int = 1) -> tuple[str, str]:
    runner_dir = workdir / "runner"
    runner_dir.mkdir(parents=True, exist_ok=True)
    (runner_dir / "runner.py").write_text(source, encoding="utf-8")
    test = render_smoke_test(mechanism, methods, iterations, hook_limit(timeout_s), rules)
    (workdir / SMOKE_PATH).write_text(test, encoding="utf-8")  # after the patch: it cannot touch it
    with tempfile.TemporaryDirectory(prefix="arx-gate-") as tmp:
        report = Path(tmp) / "report.json"
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        nonce = secrets.token_hex(16)
        home = Path(tmp) / "home"
        home.mkdir()
        env = allowed_env(str(home), {
            "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "PYTHONHASHSEED": "0", "ARX_SMOKE_REPORT": str(report), "ARX_SMOKE_NONCE": nonce},
            keep=("PYTHONPATH", "TMPDIR"))  # how arx itself was found; where temp files go
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
