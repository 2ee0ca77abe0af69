"""The runner worker as a fence: arbitrary Python in the worker (what a mechanism past the lint
could run) against each thing it must not reach. The attacks run as the runner's own code, in
``Runner.__init__``, through a real worker; what they found comes back as the runner's prompt,
and arx checks from outside that nothing changed.

Under bwrap (``fence.py``) every class is contained; the native layers (``worker_main``, where
bwrap cannot run) are checked for what they claim. Tests that need bwrap skip without it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

from arx.core.levels import worker as worker_module
from arx.core.levels.fence import NOBODY, find_bwrap
from arx.core.levels.worker import MechanismFault, RunnerWorker, WorkerLimits

HOOKS = ("build_prompt", "focus", "filter_candidates", "select", "confirm_seeds", "accept",
         "observe")
needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="no bwrap on this machine")


def runner(attack: str) -> str:
    """A runner whose ``__init__`` runs ``attack`` (it sets ``found``) and whose prompt is
    ``found`` as JSON."""
    body = textwrap.indent(textwrap.dedent(attack).strip(), "        ")
    hooks = "\n".join(f"    def {h}(self, *a):\n        return None\n" for h in HOOKS[1:])
    return (f"import json\n\n\nclass Runner:\n    def __init__(self, config):\n"
            f"        self.mechanisms = []\n        found = {{}}\n{body}\n"
            f"        self.found = found\n\n"
            f"    def build_prompt(self, ctx):\n        return json.dumps(self.found)\n\n{hooks}")


def attack(code: str, isolation: str = "bwrap", limits: WorkerLimits = WorkerLimits(),
           **config) -> tuple[dict, dict]:
    """Run ``code`` in a worker; (what it found, what the worker said held)."""
    with RunnerWorker(5.0, limits=limits, isolation=isolation) as worker:
        held = worker.start()
        worker.request({"op": "load", "source": runner(code), "config": config,
                        "module": "attack"}, "load")
        answer = worker.request({"op": "call", "hook": "build_prompt", "ctx": {}},
                                "build_prompt")
    return json.loads(answer["result"]), held


def attempt(name: str, call: str) -> str:
    """Attack lines that record ``ok`` or the exception's class under ``name``."""
    return (f"try:\n    {call}\n    found[{name!r}] = 'ok'\n"
            f"except BaseException as e:\n    found[{name!r}] = type(e).__name__\n")


# ---- arx itself is out of reach -----------------------------------------------------------------


@needs_bwrap
def test_the_worker_cannot_touch_arx_limits_priority_affinity_or_signal_it():
    me = os.getpid()
    before = (resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CPU),
              resource.getrlimit(resource.RLIMIT_FSIZE), os.getpriority(os.PRIO_PROCESS, me),
              os.sched_getaffinity(me))
    code = "import os, resource\npid = config['arx']\n" + "".join([
        attempt("prlimit", "resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, 3))"),
        attempt("fsize", "resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, 1))"),
        attempt("nice", "os.setpriority(os.PRIO_PROCESS, pid, 19)"),
        attempt("pin", "os.sched_setaffinity(pid, {0})"),
        attempt("kill", "os.kill(pid, 0)"),
        attempt("group", "os.killpg(os.getpgid(pid), 0)"),
    ]) + "found['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
    found, held = attack(code, arx=me)
    assert held["pidns"]
    for name in ("prlimit", "fsize", "nice", "pin", "kill", "group"):
        assert found[name] != "ok", (name, found)
    assert found["pids"] == [1, 2]  # bwrap's init and the worker: nothing else exists there
    after = (resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CPU),
             resource.getrlimit(resource.RLIMIT_FSIZE), os.getpriority(os.PRIO_PROCESS, me),
             os.sched_getaffinity(me))
    assert after == before


# ---- files outside the worker's directory ------------------------------------------------------


@needs_bwrap
def test_no_file_outside_changes_mode_owner_times_or_xattrs_and_no_device_node(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    os.chmod(victim, 0o644)
    interp = os.path.realpath(sys.executable)  # a file the worker does see (read-only)
    stats = {p: os.stat(p) for p in (victim, interp)}
    code = "import os, stat\n" + "".join(
        attempt(f"{what}:{name}", call.replace("P", repr(path)))
        for name, path in (("victim", str(victim)), ("interp", interp))
        for what, call in (("read", "open(P, 'rb').read()"), ("chmod", "os.chmod(P, 0o4777)"),
                           ("chown", "os.chown(P, 0, 0)"), ("utime", "os.utime(P, (1, 1))"),
                           ("xattr", "os.setxattr(P, 'user.arx', b'x')"),
                           ("write", "open(P, 'a').write('x')"))) + "".join([
        attempt("mknod", "os.mknod('/tmp/null', stat.S_IFCHR | 0o666, os.makedev(1, 3))"),
        attempt("mknod-here", "os.mknod(config['dir'] + '/n', stat.S_IFCHR | 0o666, "
                              "os.makedev(1, 3))"),
        attempt("rootdir", "open('/evil', 'w')"),
        attempt("devdir", "open('/dev/evil', 'w')"),
        attempt("own", "open('/tmp/mine', 'w').write('x')"),
    ])
    found, held = attack(code, dir=str(tmp_path))
    assert held["readonly"] and held["caps"] and held["no_new_privs"]
    for key, value in found.items():
        if key in ("own", "read:interp"):
            assert value == "ok", found  # its own directory, the interpreter it runs
        else:
            assert value != "ok", (key, found)
    for path, before in stats.items():
        after = os.stat(path)
        assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns) == \
            (before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns)
        assert os.listxattr(path) == []
    assert victim.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["victim.txt"]


@needs_bwrap
def test_uid_zero_inside_is_unprivileged_outside_with_no_capabilities():
    with RunnerWorker(5.0, isolation="bwrap") as worker:
        held = worker.start()
        procs = [psutil.Process(worker.proc.pid), *psutil.Process(worker.proc.pid).children(
            recursive=True)]
        found = {p.pid: (p.uids(), p.gids()) for p in procs}
        status = open(f"/proc/{procs[-1].pid}/status").read()
    assert held["uid"] and held["caps"]
    expected = NOBODY if os.geteuid() == 0 else os.geteuid()
    worker_uids, worker_gids = found[procs[-1].pid]
    assert set(worker_uids) == {expected} and 0 not in worker_gids
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status


# ---- secrets -----------------------------------------------------------------------------------


SECRETS = {"DATABASE_URL": "postgres://u:planted-db@h/db", "MYSQL_PWD": "planted-pwd",
           "SENTRY_DSN": "https://planted-dsn@sentry.io/1", "ARX_API_KEY": "planted-key"}


@pytest.mark.parametrize("isolation", ["bwrap", "native"])
def test_no_variable_of_the_users_environment_reaches_the_worker(monkeypatch, isolation):
    if isolation == "bwrap" and find_bwrap() is None:
        pytest.skip("no bwrap on this machine")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    code = """
        import os
        found['env'] = dict(os.environ)
        for pid in ('1', str(os.getppid())):
            try:
                found[pid] = open('/proc/' + pid + '/environ').read()
            except OSError as e:
                found[pid] = type(e).__name__
    """
    found, _ = attack(code, isolation)
    assert set(found["env"]) <= {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "PWD",
                                 "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
                                 "PYTHONIOENCODING"} | {k for k in found["env"]
                                                        if k.startswith("LC_")}
    assert not any(v in json.dumps(found) for v in SECRETS.values())


# ---- memory, disk, network ---------------------------------------------------------------------


@needs_bwrap
def test_memory_and_disk_are_capped_and_nothing_lands_on_the_host(tmp_path):
    before = {p for p in os.listdir("/tmp") if p.startswith("arx-worker-")}
    code = "import os, socket\n" + "".join([
        attempt("memfd", "os.memfd_create('x')"),
        attempt("bomb", "bytearray(3 << 30)"),
        attempt("socket", "socket.socket()"),
        attempt("fork", "os.fork()"),
        attempt("exec", "os.execv('/usr/bin/true', ['true'])"),
    ]) + textwrap.dedent("""
        written = 0
        try:
            with open('/tmp/big', 'wb') as f:
                for _ in range(200):
                    f.write(b'x' * (1 << 20))
                    written += 1 << 20
        except OSError as e:
            found['disk'] = type(e).__name__
        found['written'] = written
        os.remove('/tmp/big')
        n = 0
        for n in range(5000):
            open('/tmp/f%d' % n, 'w').close()
        found['files'] = n + 1
    """)
    limits = WorkerLimits(disk_bytes=16 << 20, file_bytes=256 << 20)
    found, held = attack(code, limits=limits)
    assert held["tmpfs"] and held["seccomp"]
    assert found["memfd"] == "PermissionError" and found["bomb"] == "MemoryError"
    assert found["socket"] == "PermissionError" and found["fork"] == "PermissionError"
    assert found["disk"] == "OSError" and found["written"] <= 16 << 20
    assert found["files"] == 5000  # in its tmpfs, gone with its namespace
    assert {p for p in os.listdir("/tmp") if p.startswith("arx-worker-")} == before


# ---- no process outlives arx -------------------------------------------------------------------


OWNER = """
import ctypes, json, sys
from arx.core.levels.worker import RunnerWorker
import psutil
w = RunnerWorker(30.0, isolation="bwrap")
w.start()
w.request({"op": "load", "source": sys.argv[1], "config": {}, "module": "m"}, "load")
kids = [p.pid for p in psutil.Process(w.proc.pid).children(recursive=True)]
print(json.dumps([w.proc.pid, *kids]), flush=True)
sys.stdin.read()
"""


@needs_bwrap
def test_the_worker_dies_with_arx_even_when_it_clears_its_parent_death_signal():
    code = "import ctypes\nctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG: none"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, runner(code)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(owner.stdout.readline())
        assert len(pids) >= 3  # bwrap, its init, the worker
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        end = time.monotonic() + 5
        while time.monotonic() < end and any(psutil.pid_exists(p) and psutil.Process(p).status()
                                             != psutil.STATUS_ZOMBIE for p in pids):
            time.sleep(0.02)
        assert not [p for p in pids if psutil.pid_exists(p)
                    and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    finally:
        owner.kill()


# ---- what held ---------------------------------------------------------------------------------


def test_the_native_layers_report_what_held_and_bwrap_says_it_is_off(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: the arx that made the directory was killed
    stale, live, other = (tmp_path / f"arx-worker-{dead.pid}-x1", tmp_path /
                          f"arx-worker-{os.getpid()}-x2", tmp_path / "arx-worker-notapid")
    for path in (stale, live, other):
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "f").write_text("left behind")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(worker_module, "_SWEPT", [])
    with RunnerWorker(2.0, isolation="native") as worker:
        held = worker.start()
        assert worker._tmp.parent == tmp_path and worker._tmp.name.startswith(
            f"arx-worker-{os.getpid()}-")
        mine = worker._tmp
    assert set(held) == {"bwrap", "netns", "pdeathsig", "rlimits", "landlock", "seccomp"}
    assert held["rlimits"] and held["bwrap"] is False
    # the first native worker of a process removes what killed ones left, nothing else
    assert not stale.exists() and live.exists() and other.exists() and not mine.exists()


@needs_bwrap
def test_auto_uses_bwrap_where_it_runs():
    with RunnerWorker(2.0) as worker:
        held = worker.start()
    assert held["bwrap"] and worker.note == ""
    assert all(held.values()), held


# ---- what the worker answers cannot crash arx --------------------------------------------------


@pytest.mark.parametrize("line", ["[" * 990 + "]" * 990, '{"ok": true, "result": ' + "[" * 5000],
                         ids=["990-deep", "5000-open"])
def test_a_deeply_nested_answer_is_a_fault_not_an_exception_in_arx(line):
    code = f"import json\njson.dumps = lambda obj, **kw: {line!r}"  # every answer from now on
    with RunnerWorker(5.0, isolation="native") as worker:
        worker.start()
        with pytest.raises(MechanismFault) as caught:
            worker.request({"op": "load", "source": runner(code), "config": {},
                            "module": "deep"}, "load")
    assert caught.value.kind == "result" and "nested deeper" in caught.value.error


# ---- deadlines only arx controls ---------------------------------------------------------------


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_progress_lines_from_the_worker_do_not_extend_a_calls_deadline():
    code = """
        import gc, time
        out = next(o for o in gc.get_objects() if type(o).__name__ == '_Out')
        while True:
            out.send({'done': 1})
            time.sleep(0.05)
    """
    start = time.monotonic()
    with RunnerWorker(0.5, isolation="native") as worker:
        worker.start()
        with pytest.raises(MechanismFault) as caught:
            worker.request({"op": "load", "source": runner(code), "config": {},
                            "module": "busy"}, "load")
    assert caught.value.kind == "deadline" and time.monotonic() - start < 3
