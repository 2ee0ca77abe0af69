"""Executors with real subprocesses and a real local Ray instance (2 CPUs)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from arx.core.errors import ConfigError
from arx.core.execution.executor import MANIFEST, TrialJob
from arx.core.execution.factory import make_executor
from arx.core.execution.local import LocalExecutor, split_gpus
from arx.core.execution.process import group_alive, write_pid_file
from arx.core.execution.trial import ExecStatus

# serial: (pytest -m serial) slots that must overlap in time, local Ray clusters; not beside another test's load (README)
pytestmark = pytest.mark.serial

SLEEPER = 'import time; time.sleep(1.5); print("---\\nval_bpb: 1.0")\n'
# reads its metric from a file that travels with the job, and says where it ran
READER = (
    "import os, pathlib\n"
    'print("cwd:", os.getcwd())\n'
    'print("gpus:", os.environ.get("CUDA_VISIBLE_DEVICES"))\n'
    'print("---\\nval_bpb:", pathlib.Path("const.txt").read_text().strip())\n'
)


def job(key: str, command: str = "python sleeper.py", files: dict | None = None,
        timeout_s: float = 20.0, **kw) -> TrialJob:
    return TrialJob(key=key, files={"sleeper.py": SLEEPER} if files is None else files,
                    command=command, timeout_s=timeout_s, metric="val_bpb", **kw)


def overlap(a, b) -> bool:
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def gone(pgid: int, within: float = 10.0) -> bool:
    """Whether every process of the group ``pgid`` (a trial's sh and its children) has exited."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------- local


def test_local_two_slots_overlap_and_one_slot_does_not(tmp_path):
    with LocalExecutor(tmp_path / "par", slots=2) as ex:
        a, b = ex.run([job("a"), job("b")])
    assert (a.key, b.key) == ("a", "b")
    assert a.result.ok and b.result.ok and a.result.metric == 1.0
    assert overlap(a, b)
    assert {a.worker, b.worker} == {"local-slot-0", "local-slot-1"}

    with LocalExecutor(tmp_path / "seq", slots=1) as ex:
        a, b = ex.run([job("a"), job("b")])
    assert a.result.ok and b.result.ok
    assert not overlap(a, b)
    assert a.worker == b.worker == "local-slot-0"


def test_local_crash_and_timeout_are_statuses_in_job_order(tmp_path):
    ex = LocalExecutor(tmp_path, slots=3, log_dir=tmp_path / "logs")
    crash, slow, ok = ex.run([
        job("crash", "echo oops; exit 3", files={}),
        job("slow", "sleep 20", files={}, timeout_s=1.0),
        job("ok", "echo '---'; echo 'val_bpb: 0.5'", files={}),
    ])
    assert [r.key for r in (crash, slow, ok)] == ["crash", "slow", "ok"]
    assert crash.result.status is ExecStatus.CRASH and crash.result.reason == "exit code 3"
    assert "oops" in crash.result.log_tail
    assert slow.result.status is ExecStatus.TIMEOUT
    assert ok.result.status is ExecStatus.OK and ok.result.metric == 0.5
    assert "oops" in (tmp_path / "logs" / "crash.log").read_text()


def test_local_files_travel_to_their_own_slot_dir_with_setup_once(tmp_path):
    ex = LocalExecutor(tmp_path, slots=2, gpus=["0", "1"])
    jobs = [job(f"j{i}", "python reader.py", {"reader.py": READER, "const.txt": str(i),
                                              f"extra{i}.txt": "x"},
                setup="echo ran >> setup_runs.txt") for i in range(4)]
    results = ex.run(jobs)
    for i, r in enumerate(results):
        assert r.result.ok, r.result.reason
        assert r.result.metric == float(i)
        slot = int(r.worker.rsplit("-", 1)[1])
        assert f"cwd: {tmp_path / f'slot-{slot}'}" in r.result.log_tail
        assert f"gpus: {slot}" in r.result.log_tail  # CUDA_VISIBLE_DEVICES per slot
    for slot in (0, 1):
        d = tmp_path / f"slot-{slot}"
        assert (d / "setup_runs.txt").read_text() == "ran\n"  # once per slot; it stays
        assert len(list(d.glob("extra*.txt"))) == 1  # a previous job's file was removed
        assert json.loads((d / MANIFEST).read_text())[0].startswith("const")


def test_local_job_killed_from_outside_is_a_crash_and_the_next_job_runs(tmp_path):
    ex = LocalExecutor(tmp_path / "w", slots=1, pid_dir=tmp_path / "pids")
    pid_file = tmp_path / "pids" / "slot-0.pid"

    def killer() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not pid_file.exists():
            time.sleep(0.02)
        time.sleep(0.3)
        os.killpg(json.loads(pid_file.read_text())["pgid"], signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    killed, after = ex.run([job("victim", "sleep 30", files={}), job("after")])
    thread.join()
    assert killed.result.status is ExecStatus.CRASH
    assert "SIGKILL" in killed.result.reason
    assert killed.finished_at - killed.started_at < 10
    assert after.result.ok


def test_local_ctrl_c_stops_running_trials_then_propagates(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    ex = LocalExecutor(tmp_path / "w", slots=2)
    cmd = f"echo $$ > {pids}/$ARX_SLOT; sleep 30"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ex.run([job("a", cmd, files={}), job("b", cmd, files={}), job("c", cmd, files={})])
    assert time.monotonic() - start < 8
    for f in pids.iterdir():
        assert gone(int(f.read_text())), "a trial outlived arx's interruption"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_local_kill_stale_finds_the_slot_pid_files(tmp_path):
    import subprocess

    orphan = subprocess.Popen(["sleep", "30"], start_new_session=True)
    write_pid_file(tmp_path / "slot-1.pid", orphan.pid, "sleep 30")
    ex = LocalExecutor(tmp_path, slots=2)
    assert ex.kill_stale() is True
    assert orphan.wait(timeout=10) == -signal.SIGTERM
    assert not (tmp_path / "slot-1.pid").exists()


def test_split_gpus_and_job_validation():
    assert split_gpus(["0", "1", "2", "3"], 2) == ["0,1", "2,3"]
    assert split_gpus(["0", "1", "2"], 2) == ["0,1", "2"]
    assert split_gpus(["0", "1"], 3) == ["0", "1", "0"]
    for bad in ("../x.py", "/etc/passwd", MANIFEST):
        with pytest.raises(ValueError):
            job("k", files={bad: ""})
    with pytest.raises(ValueError, match="unique"):
        LocalExecutor(Path("/nonexistent"), 1).run([job("k"), job("k")])


def test_make_executor_errors(tmp_path, monkeypatch):
    assert make_executor("local", tmp_path, 3, gpus=None).slots == 3
    with pytest.raises(ConfigError, match="unknown executor"):
        make_executor("slurm", tmp_path, 1)
    with pytest.raises(ConfigError, match="--address"):
        make_executor("local", tmp_path, 1, address="auto")
    with pytest.raises(ConfigError, match="at least 1"):
        make_executor("local", tmp_path, -1)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as info:
        make_executor("ray", tmp_path, 2)
    assert 'pip install "arx-autoresearch[ray]"' in str(info.value)


# ---------------------------------------------------------------------- ray


@pytest.fixture(scope="module")
def ray_instance():
    try:
        import ray
    except ImportError:
        pytest.skip('Ray is not installed (pip install "arx-autoresearch[ray]")')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_ex(ray_instance, tmp_path):
    from arx.core.execution.ray import RayExecutor

    with RayExecutor(log_dir=tmp_path / "logs") as ex:
        yield ex
    assert ray_instance.is_initialized()  # an executor leaves a connection it did not open


def test_ray_two_jobs_overlap_and_files_travel(ray_ex, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ray_ex.slots == 2
    jobs = [job(f"r{i}", "python sleeper.py && python reader.py",
                {"sleeper.py": SLEEPER, "reader.py": READER, "const.txt": str(i)})
            for i in range(2)]
    a, b = ray_ex.run(jobs)
    assert (a.key, b.key) == ("r0", "r1")
    assert a.result.ok and b.result.ok, (a.result.reason, b.result.reason)
    assert (a.result.metric, b.result.metric) == (0.0, 1.0)
    assert overlap(a, b)
    assert a.worker.startswith("ray:") and a.worker != b.worker
    for r in (a, b):
        cwd = r.result.log_tail.split("cwd: ", 1)[1].split("\n", 1)[0]
        assert not cwd.startswith(str(tmp_path)) and "/arx-ray-" in cwd
    assert "val_bpb: 1" in (tmp_path / "logs" / "r1.log").read_text()


def test_ray_killed_worker_is_a_crash_and_later_jobs_succeed(ray_ex, tmp_path):
    pid_file = tmp_path / "trial.pid"
    # the trial kills the Ray worker that runs it, then lingers as an orphan would
    cmd = f"echo $$ > {pid_file}; sleep 0.5; kill -9 $PPID; sleep 30"
    killed, = ray_ex.run([job("kill", cmd, files={})])
    assert killed.result.status is ExecStatus.CRASH
    assert "worker" in killed.result.reason and "died" in killed.result.reason
    assert gone(int(pid_file.read_text())), "the dead worker's trial was left running"
    later, = ray_ex.run([job("later")])
    assert later.result.ok, later.result.reason


def test_ray_timeouts_on_the_worker_and_on_the_driver(ray_ex, tmp_path, monkeypatch):
    from arx.core.execution import ray as executor_ray

    slow, = ray_ex.run([job("slow", "sleep 20", files={}, timeout_s=1.0)])
    assert slow.result.status is ExecStatus.TIMEOUT
    assert slow.result.reason == "timed out after 1.0 s"

    pid_file = tmp_path / "hung.pid"
    monkeypatch.setattr(executor_ray, "MARGIN_S", -28.0)  # the driver gives up after ~2 s
    hung, = ray_ex.run([job("hung", f"echo $$ > {pid_file}; sleep 30", files={},
                            timeout_s=30.0)])
    assert hung.result.status is ExecStatus.TIMEOUT
    assert "no answer from the Ray task" in hung.result.reason
    assert gone(int(pid_file.read_text())), "a cancelled task's trial was left running"


def test_ray_error_reasons(ray_instance):
    import ray.exceptions as rex

    from arx.core.execution.ray import ray_error_reason

    assert ray_error_reason(rex.WorkerCrashedError())[0] is ExecStatus.CRASH
    assert ray_error_reason(rex.TaskCancelledError())[0] is ExecStatus.INTERRUPTED
    status, reason = ray_error_reason(rex.NodeDiedError("node 10.0.0.7 died"))
    assert status is ExecStatus.CRASH and "node" in reason and "10.0.0.7" in reason
