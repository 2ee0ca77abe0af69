"""GPU contention (NVML). This machine has no GPU, so the test fakes one boundary: the NVIDIA
driver's library, ``pynvml``, as a module that reports two GPUs and, while a flag file exists,
a process of someone else busy on GPU 0. Everything else is real: the trial's process, arx's
sampler walking its process tree, the engine's judgement and re-run in a time-mode run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import git
import pytest

from arx.core.execution import gpu
from arx.core.execution.usage import UsageSampler
from arx.core.loop import noise
from arx.core.loop.engine import Engine
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.workspace import open_run
from arx.core.states import TrialState

from support.repos import make_script_repo

# serial: (pytest -m serial) its contention test measures what a trial got of the machine; not beside another test's load (README)
pytestmark = pytest.mark.serial

BUSY = Path(__file__).parents[2] / "support" / "busy_train.py"
STRANGER = 4_000_000  # a pid no trial has: someone else's job


def fake_nvml(flag: Path, own_on: int = 0) -> types.ModuleType:
    """Boundary fake of ``pynvml``: two GPUs at 90% busy; while ``flag`` exists a stranger's
    process uses GPU 0 at 80% SM. The trial's own processes show on GPU ``own_on``."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    m.NVMLError = NVMLError
    m.tree: set[int] = set()
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=90)

    def procs(h):
        out = [types.SimpleNamespace(pid=p) for p in m.tree] if h == own_on else []
        if h == 0 and flag.exists():
            out.append(types.SimpleNamespace(pid=STRANGER))
        return out

    def util(h, since):
        return [types.SimpleNamespace(pid=p.pid, smUtil=80, timeStamp=since + 1)
                for p in procs(h)]

    m.nvmlDeviceGetComputeRunningProcesses = procs
    m.nvmlDeviceGetProcessUtilization = util
    return m


def test_visible_devices():
    assert gpu.visible({}, 2) == [0, 1]
    assert gpu.visible({"CUDA_VISIBLE_DEVICES": "1"}, 2) == [1]
    assert gpu.visible({"CUDA_VISIBLE_DEVICES": ""}, 2) == []
    assert gpu.visible({"CUDA_VISIBLE_DEVICES": "0,7"}, 2) == [0]
    assert gpu.visible({"CUDA_VISIBLE_DEVICES": "GPU-5c1d"}, 2) == [0, 1]


def test_no_nvml_no_gpu_fields(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    with UsageSampler(proc.pid, interval_s=0.05, env={}) as sampler:
        proc.wait()
    assert "cpu_share" in sampler.usage() and "gpu_others_frac" not in sampler.usage()


@pytest.mark.parametrize("visible, busy", [("0", 1.0), ("1", 0.0)])
def test_a_stranger_on_the_trials_gpu_is_seen_its_own_processes_are_not(
        tmp_path, monkeypatch, visible, busy):
    flag = tmp_path / "stranger"
    flag.touch()
    nvml = fake_nvml(flag, own_on=int(visible))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.8)"])
    nvml.tree.add(proc.pid)
    with UsageSampler(proc.pid, interval_s=0.05, env={"CUDA_VISIBLE_DEVICES": visible}) as s:
        proc.wait()
    usage = s.usage()
    assert usage["gpu_others_frac"] == busy and usage["gpu_others"] == busy
    assert usage["gpu_util"] == 90.0
    assert noise.contended(usage, {"cpu_share": 0.0, "others_cpu": 0.0,
                                   "gpu_others_frac": 0.0}) == (busy == 1.0)


def test_trials_beside_a_strangers_gpu_job_are_contended_and_run_again(tmp_path, monkeypatch):
    """The stranger appears when iteration 2 starts and leaves once a trial was recorded
    contended: iteration 2 is run again, and nothing is decided from the contended attempt."""
    flag = tmp_path / "stranger"
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(flag))
    root = make_script_repo(tmp_path / "p", BUSY)
    ws = open_run(root, {"iterations": 3}, name="g")
    trace = ws.path / ws.trace_rel
    stop = threading.Event()

    def stranger():
        while not stop.is_set():
            lines = trace.read_text().splitlines() if trace.exists() else []
            events = [json.loads(line) for line in lines if line.endswith("}")]
            if not flag.exists() and any(e.get("event") == "start" and e.get("iteration") == 2
                                         and e.get("kind") == "trial" for e in events):
                flag.touch()
            if flag.exists() and any(e.get("status") == "contended" for e in events):
                flag.unlink()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=stranger)
    watcher.start()
    try:
        Engine(ws, offline_proposer(ws.config)).run()
    finally:
        stop.set()
        watcher.join()
        ws.close(remove_worktree=True)
    trials = [json.loads(line) for line in git.Repo(root).git.show(
        "arx/g:runs/g/trace.jsonl").splitlines() if '"event": "trial"' in line]
    reference = noise.reference_usage(trials)
    assert reference["gpu_others_frac"] == 0.0
    contended = [r for r in trials if r["status"] == TrialState.CONTENDED]
    assert contended and contended[0]["iteration"] == 2
    assert contended[0]["reason"].startswith("contended: others were busy on the trial's GPUs")
    decided = [r for r in trials if r["kind"] == "trial" and r["status"] != "contended"]
    assert sorted(r["iteration"] for r in decided) == [1, 2, 3]
    assert all(r["machine"]["gpu_others_frac"] < noise.GPU_BUSY_FRAC for r in decided)
