"""arx.core.levels.gate: the Level-2 validation gate, with real libcst, ruff and pytest subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from arx.core.execution.env import PROVIDER_KEY_ENV
from arx.core.execution.process import group_alive
from arx.core.levels import gate
from arx.core.levels.gate import GateResult, GateStep, check_safety, render_smoke_test, run_gate
from arx.core.levels.mechanism import MechanismPatch, apply_patches

from support.procs import gone

TEMPLATE = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")
ALLOWED = ("bisect, collections, copy, dataclasses, enum, functools, heapq, itertools, json, "
           "math, random, re, statistics, typing")


def with_mechanism(cls_code: str, init: str | None = "self.mechanisms.append(Probe())",
                   name: str = "Probe") -> str:
    patches = [MechanismPatch("new_helper_class", name, None, cls_code)]
    if init:
        patches.append(MechanismPatch("modify_init", name, None, init))
    return apply_patches(TEMPLATE, patches)


def probe(*method_lines: str, header: str = "") -> str:
    body = "\n".join("    " + line for line in method_lines)
    return with_mechanism(f"{header}class Probe:\n{body}\n")


CLEAN = probe("def __init__(self):",
              "    self.seen = 0",
              "",
              "def observe(self, ctx, record):",
              "    self.seen += 1",
              "",
              "def extend_prompt(self, ctx, lines):",
              "    return lines + [f'{self.seen} trials seen']")


def shell_first(monkeypatch, command: str) -> list[subprocess.Popen]:
    """Run the gate's smoke subprocess as ``sh -c '<command>; exec <the real pytest>'``: the
    real smoke test, after a shell step in its process group. Returns the started leaders."""
    started = []
    real = gate.start_group

    def start(argv, cwd, env, **kw):
        proc = real(["/bin/sh", "-c", f'{command}; exec "$@"', "sh", *argv], cwd, env, **kw)
        started.append(proc)
        return proc

    monkeypatch.setattr(gate, "start_group", start)
    return started


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                if not gone(int(entry.name), within=0):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def gone_all(pids: list[int]) -> bool:
    return all(gone(pid) for pid in pids)


def refused_at(result: GateResult, step: str) -> str:
    assert not result.ok
    assert result.steps[-1].name == step, result.describe()
    assert result.reason.startswith(f"{step}: ")
    return result.reason


# -- the whole gate ------------------------------------------------------------------------------


def test_a_clean_mechanism_passes_every_step(tmp_path):
    result = run_gate(CLEAN, tmp_path, mechanism="Probe")
    assert result.ok, result.describe()
    assert [s.name for s in result.steps] == ["parse", "ruff", "safety", "smoke"]
    assert all(s.ok and s.reason == "" and s.seconds > 0 for s in result.steps)
    assert result.reason == "" and result.seconds == pytest.approx(
        sum(s.seconds for s in result.steps))
    assert (tmp_path / "runner" / "runner.py").read_text() == CLEAN
    assert (tmp_path / "runner" / "test_smoke.py").read_text() == render_smoke_test(
        "Probe", (), 8, gate.hook_limit(60))
    assert result.summary().startswith("pass (parse ")
    assert result.to_json()["ok"] is True


def test_the_template_runner_passes(tmp_path):
    assert run_gate(TEMPLATE, tmp_path).ok


def test_syntax_error_is_refused_at_parse(tmp_path):
    reason = refused_at(run_gate(TEMPLATE + "\ndef broken(:\n", tmp_path), "parse")
    assert "syntax error" in reason and "line" in reason


def test_undefined_name_is_refused_by_ruff(tmp_path):
    source = probe("def focus(self, ctx):", "    return foo")
    result = run_gate(source, tmp_path, mechanism="Probe")
    reason = refused_at(result, "ruff")
    line = source.splitlines().index("        return foo") + 1
    assert reason == f"ruff: F821 Undefined name `foo` (line {line})"
    assert "F821" in result.steps[-1].details


def test_import_sklearn_is_refused_by_safety(tmp_path):
    source = probe("def focus(self, ctx):", "    return [sklearn.__name__]",
                   header="import sklearn\n\n\n")
    reason = refused_at(run_gate(source, tmp_path, mechanism="Probe"), "safety")
    line = source.splitlines().index("import sklearn") + 1
    assert reason == f"safety: import of 'sklearn' is not allowed (allowed: {ALLOWED}) (line {line})"


@pytest.mark.parametrize("header, lines, words", [
    ("import os\n\n\n", ["def focus(self, ctx):", "    return [os.getcwd()]"],
     "import of 'os' is not allowed"),
    ("", ["def observe(self, ctx, record, os=None):", "    self.key = os.environ['ARX_API_KEY']"],
     "use of 'os' is not allowed"),
    ("", ["def observe(self, ctx, record):", "    open('/tmp/x', 'w').write('key')"],
     "use of 'open' is not allowed"),
    ("", ["def observe(self, ctx, record):", "    self.mod = __import__('os')"],
     "use of '__import__' is not allowed"),
    ("", ["def observe(self, ctx, record):",
          "    self.s = ().__class__.__bases__[0].__subclasses__()"],
     "access to attribute '__class__' is not allowed"),
])
def test_escapes_are_refused_by_safety(tmp_path, header, lines, words):
    reason = refused_at(run_gate(probe(*lines, header=header), tmp_path), "safety")
    assert words in reason


def test_a_class_with_no_integration_is_refused_by_smoke(tmp_path):
    source = with_mechanism("class Probe:\n    def focus(self, ctx):\n        return None\n",
                            init=None)
    reason = refused_at(run_gate(source, tmp_path, mechanism="Probe"), "smoke")
    assert reason.startswith("smoke: no integration: class Probe is defined but the runner "
                             "never creates one")


def test_a_mechanism_whose_methods_are_never_called_is_refused(tmp_path):
    source = probe("def choose(self, ctx):", "    return None")
    reason = refused_at(run_gate(source, tmp_path, mechanism="Probe"), "smoke")
    assert "no integration: Probe is created but none of its methods (choose)" in reason


def test_a_new_method_must_be_reached(tmp_path):
    dead = apply_patches(TEMPLATE, [MechanismPatch(
        "new_method", "Helper", None, "def helper(self, ctx):\n    return ctx\n")])
    reason = refused_at(run_gate(dead, tmp_path, mechanism="Helper", methods=["helper"]),
                        "smoke")
    assert reason == "smoke: no integration: the new method Runner.helper was never called " \
                     "in 8 simulated iterations"
    used = apply_patches(dead, [MechanismPatch(
        "replace_method", "Helper", "select",
        "def select(self, ctx, candidates):\n    self.helper(ctx)\n    return candidates[0]\n")])
    assert run_gate(used, tmp_path, mechanism="Helper", methods=["helper"]).ok


def test_an_infinite_loop_in_a_hook_times_out(tmp_path):
    source = probe("def focus(self, ctx):", "    while True:", "        pass")
    result = run_gate(source, tmp_path, mechanism="Probe", timeout_s=6)
    reason = refused_at(result, "smoke")
    assert reason == "smoke: focus timed out after 1.5 s (per-hook limit; iteration 1)"
    assert result.seconds < 6


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_a_loop_inside_one_c_call_is_killed_at_the_hook_deadline(tmp_path):
    source = probe("def focus(self, ctx):", "    return [max(itertools.count())]",
                   header="import itertools\n\n\n")
    result = run_gate(source, tmp_path, mechanism="Probe", timeout_s=4)
    reason = refused_at(result, "smoke")  # max() over an endless iterator never sees a signal
    assert reason == "smoke: focus timed out after 1 s (per-hook limit; iteration 1)"
    assert result.seconds < 4


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_at_the_gate_timeout_the_smoke_group_and_its_runner_worker_are_killed(tmp_path,
                                                                             monkeypatch):
    grandchild = tmp_path / "grandchild.pid"  # a process the smoke test's group started
    started = shell_first(monkeypatch, f"sleep 60 & echo $! > {grandchild}")
    monkeypatch.setattr(gate, "hook_limit", lambda timeout_s: 60.0)  # no per-hook deadline
    source = probe("def focus(self, ctx):", "    return [max(itertools.count())]",
                   header="import itertools\n\n\n")
    workdir = tmp_path / "work"
    result = run_gate(source, workdir, mechanism="Probe", timeout_s=4)
    reason = refused_at(result, "smoke")
    assert reason.startswith("smoke: timed out after 4 s")
    assert reason.endswith("(in focus, iteration 1)") or "(in load" in reason  # slow start-up
    (smoke,) = started
    assert gone(int(grandchild.read_text())) and gone(smoke.pid)
    assert not group_alive(smoke.pid)
    assert processes_mentioning(str(workdir)) == []  # nothing of the smoke test is left
    # the runner's worker (its own group) went with the smoke test: killed with its parent
    assert gone_all(processes_mentioning(f'"parent": {smoke.pid}'))


def test_the_smoke_test_sees_an_allow_listed_environment(tmp_path, monkeypatch):
    for name in PROVIDER_KEY_ENV:
        monkeypatch.setenv(name, "sk-planted")
    monkeypatch.setenv("MY_LLM_KEY", "planted-secret")  # [llm] api_key_env = "MY_LLM_KEY"
    monkeypatch.setenv("DEEPSEEK_CREDS", "planted-secret")  # named, though it looks harmless
    monkeypatch.setenv("HF_TOKEN", "planted-secret")  # looks secret: untrusted code never sees it
    monkeypatch.setenv("DATABASE_URL", "postgres://u:planted-secret@h/db")  # looks harmless
    monkeypatch.setenv("ARX_TEST_VISIBLE", "yes")
    dump = tmp_path / "smoke.env"
    shell_first(monkeypatch, f"env > {dump}")
    result = run_gate(TEMPLATE, tmp_path / "work", drop_env=("MY_LLM_KEY", "DEEPSEEK_CREDS"))
    assert result.ok, result.describe()  # the real smoke test ran and passed after the dump
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen["ARX_SMOKE_NONCE"] and seen["HOME"] != os.environ.get("HOME")
    assert "PATH" in seen and "ARX_TEST_VISIBLE" not in seen  # an allow-list, not a deny-list
    assert not {*PROVIDER_KEY_ENV, "MY_LLM_KEY", "DEEPSEEK_CREDS", "HF_TOKEN",
                "DATABASE_URL"} & set(seen)
    assert "planted" not in dump.read_text()


def test_a_hook_that_raises_on_its_first_call_is_refused(tmp_path):
    source = probe("def focus(self, ctx):", "    return [1 / 0]")
    reason = refused_at(run_gate(source, tmp_path, mechanism="Probe"), "smoke")
    line = source.splitlines().index("        return [1 / 0]") + 1
    assert reason == ("smoke: focus raised ZeroDivisionError: division by zero "
                      f"(runner.py line {line}, iteration 1)")


@pytest.mark.parametrize("target, code, words", [
    ("select", "def select(self, ctx, candidates):\n    return {'changes': {'DEPTH': 3}}\n",
     "select returned {'changes': {'DEPTH': 3}}, which is not one of the candidates"),
    ("accept", "def accept(self, ctx, metrics, best_metrics):\n    return None\n",
     "accept returned None, expected a bool"),
    ("build_prompt", "def build_prompt(self, ctx):\n    return ''\n", "expected a non-empty str"),
    ("focus", "def focus(self, ctx):\n    return ['SEED']\n", "not active"),
    ("filter_candidates", "def filter_candidates(self, ctx, candidates):\n"
                          "    return [{'hypothesis': 'x'}]\n", "not a dict with a dict"),
    ("observe", "def observe(self, ctx, record):\n    assert record['metric'] is not None\n",
     "observe raised AssertionError"),
])
def test_broken_contracts_are_refused_by_smoke(tmp_path, target, code, words):
    source = apply_patches(TEMPLATE, [MechanismPatch("replace_method", "Broken", target, code)])
    assert words in refused_at(run_gate(source, tmp_path), "smoke")


def test_a_runner_that_fails_to_load_is_refused(tmp_path):
    source = apply_patches(TEMPLATE, [MechanismPatch("modify_init", "Broken", None,
                                                     "self.x = [][1]")])
    reason = refused_at(run_gate(source, tmp_path), "smoke")
    assert reason.startswith("smoke: load: IndexError: list index out of range (runner.py line")


def test_a_planted_test_file_is_overwritten(tmp_path):
    planted = tmp_path / "runner" / "test_smoke.py"
    planted.parent.mkdir()
    planted.write_text("def test_ok():\n    pass\n")
    source = probe("def focus(self, ctx):", "    return [1 / 0]")
    assert not run_gate(source, tmp_path, mechanism="Probe").ok
    assert "def test_ok" not in planted.read_text()


# -- pieces --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code, words", [
    ("import random\nx = random._os", "use of random._os"),
    ("import random\nr = random", "may only be used as `random.attribute`"),
    ("import typing\nx = typing.sys", "access to attribute 'sys'"),
    ("from typing import get_type_hints", "import of typing.get_type_hints"),
    ("from json import decoder", "import of module json.decoder"),
    ("import collections\nx = collections.abc.Mapping", "use of module collections.abc"),
    ("x = '{0.gi_frame}'.format(1)", "access to attribute 'format'"),
    ("x = '{0.__init__.__globals__}'", "mentions '__globals__'"),
    ("n = 'real'\nx = getattr(1, n)", "getattr with a computed attribute name"),
    ("x = getattr(1, '__dict__')", "access to attribute '__dict__'"),
    ("import functools\nx = functools.reduce(getattr, ['a'], 1)", "getattr may only be called"),
    ("def g():\n    yield 1\nx = g().gi_frame.f_globals", "access to attribute 'gi_frame'"),
    ("import math\nmath.pi = 3", "assigning to math.pi"),
    ("from . import x", "relative imports"),
    ("from math import *", "`from math import *`"),
    ("x = eval('1')", "use of 'eval'"),
    ("x = compile('1', 'f', 'exec')", "use of 'compile'"),
    ("x = globals()", "use of 'globals'"),
    ("x = vars()", "use of 'vars'"),
    ("breakpoint()", "use of 'breakpoint'"),
    ("import subprocess", "import of 'subprocess'"),
    ("import importlib", "import of 'importlib'"),
    ("x = __builtins__", "use of '__builtins__'"),
    # the two escapes found by hand: a submodule bound by `from pkg import mod`, then a private
    # attribute of it; and a ForwardRef's string evaluated (``_evaluate``)
    ("from json import tool\nx = tool.argparse._sys.modules", "import of module json.tool"),
    ("import json.tool\nfrom json import tool\nx = tool.argparse._sys.modules",
     "use of module json.tool.argparse"),
    ("import json.tool\nfrom json import tool\nx = tool.main._y", "private attribute '_y'"),
    ("import typing\nx = typing.get_args(typing.List['a' + 'b'])[0]._evaluate(None, None, ())",
     "private attribute '_evaluate'"),
    ("x = getattr(object(), '_evaluate')", "private attribute '_evaluate'"),
])
def test_safety_refusals(code, words):
    problems = check_safety(code)
    assert problems and words in problems[0], problems


@pytest.mark.parametrize("code", [
    "import collections.abc\nx = collections.abc.Mapping",
    "from collections import Counter, defaultdict\nx = Counter(defaultdict(int))",
    "class A:\n    def __init__(self):\n        self._seen = {}\n        self._seen[1] = 2\n",
    "import collections.abc\nfrom collections import abc\nx = abc.Mapping",
    "import dataclasses\n@dataclasses.dataclass\nclass A:\n    x: int = 0",
    "class A(dict):\n    def __init__(self):\n        super().__init__()\n"
    "        self.n = type(self).__name__\n        self.m = getattr(self, 'n', None)",
    "import heapq, bisect, statistics, re, json, copy, enum, itertools, functools, random",
    "x = f'{1:.3g}'",
])
def test_safety_allows_plain_computation(code):
    assert check_safety(code) == []


def test_safety_allows_what_the_template_imports():
    assert check_safety("import zlib\nx = zlib.crc32(b'')")
    assert check_safety("import zlib\nx = zlib.crc32(b'')", template_source="import zlib\n") == []


def test_result_reason_and_describe():
    steps = (GateStep("parse", True, "", 0.01), GateStep("ruff", False, "ruff F821 x", 0.02,
                                                         "F821 x (line 3)\nF401 y"))
    result = GateResult(ok=False, steps=steps)
    assert result.reason == "ruff: ruff F821 x"
    assert result.seconds == pytest.approx(0.03)
    assert result.step("ruff") is steps[1] and result.step("smoke") is None
    text = result.describe()
    assert "refused" in text and "F401 y" in text
    assert result.summary() == "fail: ruff: ruff F821 x (parse 0.01s, ruff 0.02s)"


def test_rendered_smoke_test_is_lint_clean(tmp_path):
    path = tmp_path / "test_smoke.py"
    path.write_text(render_smoke_test("TabuList", ("helper",), 8, 5.0))
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--line-length", "100",
         "--select", "E,F,W,B,UP,I", "--config", 'lint.isort.known-first-party=["arx"]',
         str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
