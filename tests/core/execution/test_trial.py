"""run_trial and parse_output with real subprocesses (process groups: test_process.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from arx.core.execution import process, trial
from arx.core.execution.env import PROVIDER_KEY_ENV
from arx.core.execution.process import group_alive
from arx.core.execution.trial import ExecStatus, TrialSpec, parse_output, run_trial

from support.procs import gone, wait_for

# serial: (pytest -m serial) timeouts and signals timed against live trials; not beside another test's load (README)
pytestmark = pytest.mark.serial

SUMMARY = """\
step 00001 | loss 3.2
val_bpb: 1.5
step 00002 | loss 2.9
---
val_bpb:          0.997900
training_seconds: 300.1
num_steps:        953
depth:            8
device:           cpu
"""


def spec(tmp_path: Path, command: str, **kw) -> TrialSpec:
    kw.setdefault("timeout_s", 10.0)
    return TrialSpec(command=command, cwd=tmp_path, metric="val_bpb", **kw)


def script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "out.txt"
    path.write_text(text)
    return f"cat {path}"


def test_ok_with_metric_and_summary(tmp_path):
    lines = []
    result = run_trial(spec(tmp_path, script(tmp_path, SUMMARY)), on_line=lines.append)
    assert result.status is ExecStatus.OK and result.ok
    assert result.metric == pytest.approx(0.9979)  # the last match wins
    assert result.returncode == 0
    assert result.summary == {
        "val_bpb": 0.9979,
        "training_seconds": 300.1,
        "num_steps": 953.0,
        "depth": 8.0,
        "device": "cpu",
    }
    assert result.reason == "val_bpb = 0.9979"
    assert lines == SUMMARY.splitlines()
    assert result.log_tail.splitlines() == SUMMARY.splitlines()
    assert 0 < result.wall_s < 5


def test_crash_exit_code(tmp_path):
    result = run_trial(spec(tmp_path, "echo 'val_bpb: 1.0'; echo Traceback >&2; exit 3"))
    assert result.status is ExecStatus.CRASH
    assert result.returncode == 3 and result.reason == "exit code 3"
    assert result.metric is None
    assert result.log_tail == "val_bpb: 1.0\nTraceback"  # stderr merged in order


def test_crash_by_signal(tmp_path):
    result = run_trial(spec(tmp_path, "kill -SEGV $$"))
    assert result.status is ExecStatus.CRASH
    assert result.returncode == -signal.SIGSEGV and "SIGSEGV" in result.reason


def test_fail_line(tmp_path):
    result = run_trial(spec(tmp_path, "echo 'step 1 loss nan'; echo FAIL; exit 1"))
    assert result.status is ExecStatus.FAIL
    assert result.reason == "printed FAIL (exit code 1)"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_metric(tmp_path, value):
    result = run_trial(spec(tmp_path, f"echo '---'; echo 'val_bpb: {value}'"))
    assert result.status is ExecStatus.NAN
    assert result.metric is None
    assert result.reason == f"val_bpb is {value}"
    assert result.summary == {"val_bpb": value}  # kept as text: a trace stays valid JSON


def test_no_metric(tmp_path):
    result = run_trial(spec(tmp_path, "echo 'training done'"))
    assert result.status is ExecStatus.NO_METRIC
    assert result.reason == "no 'val_bpb:' line in output"
    custom = run_trial(spec(tmp_path, "echo 'acc=0.9'", metric_regex=r"loss=(\S+)"))
    assert custom.status is ExecStatus.NO_METRIC and "loss=" in custom.reason


def test_custom_metric_regex(tmp_path):
    result = run_trial(
        spec(tmp_path, "echo 'eval acc=0.81'; echo 'eval acc=0.93'", metric_regex=r"acc=(\S+)")
    )
    assert result.status is ExecStatus.OK and result.metric == pytest.approx(0.93)


def test_timeout_kills_grandchildren(tmp_path):
    gc = tmp_path / "grandchild.pid"
    command = f"echo started; sleep 60 & echo $! > {gc}; sleep 60"
    t0 = time.monotonic()
    result = run_trial(spec(tmp_path, command, timeout_s=0.5))
    elapsed = time.monotonic() - t0
    assert result.status is ExecStatus.TIMEOUT
    assert result.reason == "timed out after 0.5 s"
    assert result.log_tail == "started"
    assert elapsed < 0.5 + process.KILL_GRACE_S
    assert elapsed < 3.0  # sleep dies on SIGTERM: no need to wait out the grace period
    assert gone(int(gc.read_text()))


def test_timeout_sigkills_what_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "KILL_GRACE_S", 0.3)
    gc = tmp_path / "grandchild.pid"
    command = f"trap '' TERM; sleep 60 & echo $! > {gc}; sleep 60"
    t0 = time.monotonic()
    result = run_trial(spec(tmp_path, command, timeout_s=0.5))
    assert result.status is ExecStatus.TIMEOUT
    assert time.monotonic() - t0 < 0.5 + 0.3 + 1.0
    assert gone(int(gc.read_text()))


def test_stragglers_do_not_hold_a_finished_trial(tmp_path):
    gc = tmp_path / "grandchild.pid"
    t0 = time.monotonic()
    result = run_trial(spec(tmp_path, f"sleep 60 & echo $! > {gc}; echo 'val_bpb: 1.25'"))
    assert result.status is ExecStatus.OK and result.metric == 1.25
    assert time.monotonic() - t0 < 3.0
    assert gone(int(gc.read_text()))


def test_env_drop_and_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("ARX_TEST_SECRET", "s3cret")
    command = 'echo "secret=${ARX_TEST_SECRET:-unset} extra=$ARX_EXTRA"'
    plain = run_trial(spec(tmp_path, command))
    assert plain.log_tail == "secret=s3cret extra="
    dropped = run_trial(
        spec(tmp_path, command, drop_env=("ARX_TEST_SECRET",), env={"ARX_EXTRA": "x"})
    )
    assert dropped.log_tail == "secret=unset extra=x"


def test_llm_keys_never_reach_a_trial(tmp_path, monkeypatch):
    for name in PROVIDER_KEY_ENV:
        monkeypatch.setenv(name, "sk-planted")
    monkeypatch.setenv("MY_LLM_KEY", "planted-secret")  # named by [llm] api_key_env
    monkeypatch.setenv("ARX_TEST_VISIBLE", "yes")
    log = tmp_path / "env.log"
    result = run_trial(spec(tmp_path, "env", drop_env=("MY_LLM_KEY",), log_path=log))
    seen = dict(line.split("=", 1) for line in log.read_text().splitlines() if "=" in line)
    assert result.returncode == 0 and seen["ARX_TEST_VISIBLE"] == "yes"
    assert not {*PROVIDER_KEY_ENV, "MY_LLM_KEY"} & set(seen)
    assert "planted" not in log.read_text()


def test_log_path_and_pid_path(tmp_path):
    log = tmp_path / "logs" / "trial-1.log"
    pid = tmp_path / "run" / "trial.pid"
    seen = []

    def on_line(line: str) -> None:
        if not seen:  # while the trial runs, its pgid is on record
            seen.append(json.loads(pid.read_text())["pgid"])

    many = "\n".join(f"step {i}" for i in range(5000))
    result = run_trial(
        spec(
            tmp_path,
            script(tmp_path, many + "\nwarn\n") + "; echo oops >&2",
            log_path=log,
            pid_path=pid,
        ),
        on_line=on_line,
    )
    assert result.status is ExecStatus.NO_METRIC
    assert log.read_text() == many + "\nwarn\noops\n"
    assert len(result.log_tail.splitlines()) == trial.TAIL_LINES
    assert result.log_tail.endswith("step 4999\nwarn\noops")
    assert seen and seen[0] > 1
    assert not pid.exists()


def test_cannot_start(tmp_path):
    result = run_trial(spec(tmp_path / "missing", "true", log_path=tmp_path / "l.log"))
    assert result.status is ExecStatus.CRASH and result.returncode is None
    assert "could not start" in result.reason
    assert "could not start" in (tmp_path / "l.log").read_text()


def test_keyboard_interrupt_kills_the_group_then_propagates(tmp_path):
    pgid_file = tmp_path / "pgid"

    def on_line(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(spec(tmp_path, f"echo $$ > {pgid_file}; echo go; sleep 60"), on_line=on_line)
    assert gone(int(pgid_file.read_text()))
    assert not group_alive(int(pgid_file.read_text()))


def test_ctrl_c_kills_the_group_then_raises_keyboard_interrupt(tmp_path):
    pgid_file = tmp_path / "pgid"
    with pytest.raises(KeyboardInterrupt):
        run_trial(
            spec(tmp_path, f"echo $$ > {pgid_file}; echo go; sleep 60"),
            on_line=lambda line: os.kill(os.getpid(), signal.SIGINT),
        )
    assert gone(int(pgid_file.read_text()))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_with_a_handler_that_returns_gives_interrupted(tmp_path):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        result = run_trial(
            spec(tmp_path, "echo go; sleep 60"),
            on_line=lambda line: os.kill(os.getpid(), signal.SIGTERM),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.status is ExecStatus.INTERRUPTED and "SIGTERM" in result.reason
    assert received == [signal.SIGTERM]  # arx's own handler still ran


_FAKE_ARX = """
import sys
from pathlib import Path
from arx.core.execution.trial import TrialSpec, run_trial
tmp = Path(sys.argv[1])
command = f"sleep 60 & echo $! > {tmp / 'gc.pid'}; sleep 60"
run_trial(TrialSpec(command, tmp, 60, "val_bpb", pid_path=tmp / "trial.pid"))
"""


def start_fake_arx(tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _FAKE_ARX, str(tmp_path)])


def test_sigterm_to_arx_kills_the_trial_and_ends_arx(tmp_path):
    arx = start_fake_arx(tmp_path)
    try:
        grandchild = int(wait_for(tmp_path / "gc.pid"))
        pgid = json.loads(wait_for(tmp_path / "trial.pid"))["pgid"]
        arx.send_signal(signal.SIGTERM)
        assert arx.wait(timeout=5) == -signal.SIGTERM  # re-delivered: arx dies as it would have
        assert gone(grandchild) and gone(pgid)
        assert not (tmp_path / "trial.pid").exists()
    finally:
        arx.kill()
        arx.wait()


def test_parse_output():
    metric, summary, problem = parse_output(SUMMARY, "val_bpb")
    assert metric == pytest.approx(0.9979) and problem is None
    assert summary["num_steps"] == 953.0 and summary["device"] == "cpu"
    assert parse_output("val_bpb: 1.0\n---\na: 1\n---\nb: 2\n", "val_bpb")[1] == {"b": 2.0}
    assert parse_output("loss: 1\n", "val_bpb") == (None, {}, "no 'val_bpb:' line in output")
    assert parse_output("val_bpb: oops\n", "val_bpb")[2] == "val_bpb value 'oops' is not a number"
    assert parse_output("val_bpb: 1.0\nFAIL\n", "val_bpb")[2] == "printed FAIL"
    assert parse_output("progress 10%\rprogress 100%\rval_bpb: 2.5\r\n", "val_bpb")[0] == 2.5
    text = textwrap.dedent("""\
        epoch 1 top1=0.5
        epoch 2 top1=0.75
    """)
    assert parse_output(text, "acc", r"top1=([\d.]+)")[0] == 0.75
