"""Run one training trial as a subprocess and say what happened, without raising.

Like nanochat's ``execution.py``, a target's failure is data: ``run_trial`` returns a
``TrialResult`` whose ``status`` is one of ``ExecStatus`` and whose ``reason`` is one readable
sentence. Only arx's own interruption (Ctrl-C, SIGTERM, SIGHUP) propagates, after the trial's
whole process group has been killed, so a stopped arx never leaves a training run behind; after
``kill -9 arx``, ``process.kill_stale`` finds the orphan through ``pid_path``.

The child runs ``/bin/sh -c <command>`` in its own process group (``process.start_group``), with
arx's environment as ``env.scrub_env`` leaves it (no LLM keys). Output (stdout and stderr
merged) is streamed line by line to ``log_path`` and ``on_line`` and scanned as it goes:
- the metric: the last match of ``metric_regex`` (default ``^<metric>:\\s*(\\S+)\\s*$``),
  applied to each line; group 1 if the regex has a group, else the whole match;
- the summary: every ``key: value`` line after the last ``---`` line (Karpathy's summary block);
- a line that is exactly ``FAIL`` (autoresearch's ``train.py`` prints it when the loss explodes);
- the learning curve: every metric line before the summary, with its progress (``curve``).
A ``watch`` sees the curve after each new point and may stop the trial (``PRUNED``, e.g. the
runner's pruning rule, ``loop.pruning``): the group is killed at once and the curve is kept.
When the command's main process exits, anything it left running in its group is killed too.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO

from arx.core.execution.curve import CurveReader, Point
from arx.core.execution.env import scrub_env
from arx.core.execution.process import (
    Interrupted,
    SignalGuard,
    kill_group,
    start_group,
    write_pid_file,
)
from arx.core.execution.usage import UsageSampler

#: lines kept in ``TrialResult.log_tail``
TAIL_LINES = 40
#: bytes read at once; also the longest line piece handled (a bar without newlines is cut up)
_CHUNK = 1 << 16
_SUMMARY_LINE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*:\s*(.*?)\s*$")
#: lines left out of an output's digest: what differs between two runs of the same training
#: (times, rates, dates, memory), so that equal digests mean the same numbers were trained
_TIMING_LINE = re.compile(
    r"time|sec|elapsed|eta\b|\bms\b|/s\b|s/it|mfu|throughput|speed|wall|mem|vram|\bdt\b|"
    r"date|clock|duration|\d\d:\d\d|/tmp/", re.IGNORECASE)


class ExecStatus(str, Enum):
    OK = "ok"
    CRASH = "crash"  # non-zero exit, killed by a signal, or could not start
    FAIL = "fail"  # printed a line "FAIL"
    NAN = "nan"  # the metric is nan or inf
    NO_METRIC = "no_metric"  # exit 0 but no parsable metric line
    TIMEOUT = "timeout"  # hit the hard timeout; the group was killed
    INTERRUPTED = "interrupted"  # arx got a signal and its own handler chose not to exit
    PRUNED = "pruned"  # its watch stopped it early from its learning curve


@dataclass(frozen=True)
class TrialSpec:
    command: str  # shell command line, run with /bin/sh -c in cwd
    cwd: Path
    timeout_s: float  # hard timeout: the whole group is killed (process.kill_group)
    metric: str  # e.g. "val_bpb"
    metric_regex: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # merged over the scrubbed environment
    drop_env: tuple[str, ...] = ()  # withheld too (scrub_env): the key names the run's LLM reads
    log_path: Path | None = None  # combined stdout+stderr, streamed
    pid_path: Path | None = None  # the child's pgid (JSON) while it runs, for kill_stale
    progress_regex: str | None = None  # the step a line names (``curve.DEFAULT_PROGRESS``)


@dataclass(frozen=True)
class TrialResult:
    status: ExecStatus
    metric: float | None  # set only when status is OK
    returncode: int | None  # as subprocess reports it (negative: killed by that signal)
    wall_s: float
    summary: Mapping[str, float | str]
    log_tail: str
    reason: str
    #: what the trial got of the machine (``execution.usage``); empty when it never ran
    usage: Mapping[str, float] = field(default_factory=dict)
    #: a digest of what the run printed, its timing and memory lines left out (``_Scanner``):
    #: two runs that trained the same thing print the same digest (``loop.noeffect``)
    digest: str | None = None
    #: the metric as printed (its digits tell the metric's resolution: ``loop.noise``)
    metric_text: str | None = None
    #: the learning curve: (progress, value) of each metric line before the last (all of them
    #: when pruned), in ``curve_unit`` ("step" or "s"); ``curve_stride`` > 1 when thinned
    curve: tuple[Point, ...] = ()
    curve_unit: str | None = None
    curve_stride: int = 1
    #: where its progress ended (``CurveReader.end``): the whole a share of the budget is of
    curve_end: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is ExecStatus.OK


class _Scanner:
    """Scans output line by line, so output of any length is parsed in constant memory."""

    def __init__(self, metric: str, metric_regex: str | None,
                 progress_regex: str | None = None,
                 watch: Callable[[CurveReader], bool] | None = None):
        self.metric = metric
        self.curve = CurveReader(progress_regex)
        self.watch = watch
        self.pruned = False
        self.last_in_curve = False  # the last metric line is a curve point (no summary after)
        self.custom = metric_regex is not None
        self.pattern = re.compile(
            metric_regex or rf"^{re.escape(metric)}:\s*(\S+)\s*$", re.MULTILINE
        )
        self.raw: str | None = None
        self.failed = False
        self.in_summary = False
        self.summary: dict[str, float | str] = {}
        self._digest = hashlib.blake2b(digest_size=8)

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    def feed(self, line: str) -> None:
        if self.pruned:
            return  # what a stopped trial still had in the pipe changes nothing
        stripped = line.strip()
        if stripped and not _TIMING_LINE.search(stripped):
            self._digest.update(stripped.encode("utf-8", "replace") + b"\n")
        if stripped == "FAIL":
            self.failed = True
        if stripped == "---":
            self.in_summary, self.summary = True, {}
        elif self.in_summary:
            m = _SUMMARY_LINE.match(line)
            if m:
                self.summary[m.group(1)] = _number_or_text(m.group(2))
        if not self.in_summary:
            self.curve.step_line(line)
        if not self.custom and self.metric not in line:
            return  # fast path: most lines of a long log are not the metric line
        m = self.pattern.search(line)
        if m:
            self.raw = m.group(1) if self.pattern.groups else m.group(0)
            self.last_in_curve = False
            if not self.in_summary:
                self._point(self.raw)

    def _point(self, raw: str) -> None:
        try:
            value = float(raw)
        except ValueError:
            return
        if not math.isfinite(value) or not self.curve.point(value):
            return
        self.last_in_curve = True
        if self.watch is not None and not self.pruned and self.watch(self.curve):
            self.pruned = True

    def points(self, ok: bool) -> tuple[Point, ...]:
        """The curve as recorded: without the last point when it is the trial's metric."""
        points = self.curve.points
        return tuple(points[:-1] if ok and self.last_in_curve else points)

    def outcome(self) -> tuple[float | None, str | None, ExecStatus | None]:
        """(finite metric, problem, status the problem implies)."""
        if self.failed:
            return None, "printed FAIL", ExecStatus.FAIL
        if self.raw is None:
            what = (
                f"line matching {self.pattern.pattern!r}"
                if self.custom
                else f"'{self.metric}:' line"
            )
            return None, f"no {what} in output", ExecStatus.NO_METRIC
        try:
            value = float(self.raw)
        except ValueError:
            return None, f"{self.metric} value {self.raw!r} is not a number", ExecStatus.NO_METRIC
        if not math.isfinite(value):
            return None, f"{self.metric} is {self.raw.strip().lower()}", ExecStatus.NAN
        return value, None, None


def _number_or_text(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text  # keep nan/inf as text: JSON-safe


def _display(line: str) -> str:
    """A raw output line as a terminal shows it: no line ending, only the last \\r segment."""
    line = line.rstrip("\r\n")
    return line.rsplit("\r", 1)[-1] if "\r" in line else line


def parse_output(
    text: str, metric: str, metric_regex: str | None = None
) -> tuple[float | None, dict, str | None]:
    """(metric, summary, problem) from a whole output; the metric is None unless finite.

    ``problem`` is None when the metric is fine, else a sentence: "printed FAIL",
    "val_bpb is nan", "no 'val_bpb:' line in output", ...
    """
    scanner = _Scanner(metric, metric_regex)
    for line in text.split("\n"):
        scanner.feed(_display(line))
    value, problem, _ = scanner.outcome()
    return value, dict(scanner.summary), problem


def run_trial(spec: TrialSpec, on_line: Callable[[str], None] | None = None,
              watch: Callable[[CurveReader], bool] | None = None) -> TrialResult:
    """Run ``spec.command`` to completion or timeout; see the module docstring.

    ``on_line`` gets each output line (without its newline) on the calling thread; an exception
    it raises kills the trial and propagates. Called from the main thread, SIGINT, SIGTERM and
    SIGHUP kill the trial's group first and are then re-delivered to the handlers arx had
    (Ctrl-C raises KeyboardInterrupt, a default SIGTERM ends arx); a handler that returns
    yields an INTERRUPTED result. From other threads the caller must stop trials itself.
    ``watch`` gets the curve after each new point; True stops the trial (``PRUNED``).
    """
    env = scrub_env(spec.drop_env)
    env.update(spec.env)
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines arrive live, and survive a timeout kill
    start = time.monotonic()
    guard = SignalGuard()  # from before the child exists: no window for an orphan
    interrupted: int | None = None
    try:
        with _open_log(spec.log_path) as log_file:
            started = _start(spec, env, log_file)
            if isinstance(started, str):
                wall = time.monotonic() - start
                result = TrialResult(ExecStatus.CRASH, None, None, wall, {}, started, started)
            else:
                proc = started
                output = _Output(_Scanner(spec.metric, spec.metric_regex, spec.progress_regex,
                                          watch), log_file, on_line)
                sampler = UsageSampler(proc.pid, env=env)
                try:
                    with sampler:
                        timed_out, interrupted = _supervise(proc, spec.timeout_s, start, output,
                                                            guard)
                finally:
                    if spec.pid_path is not None:
                        Path(spec.pid_path).unlink(missing_ok=True)
    finally:
        guard.restore()
    guard.redeliver()  # the trial is dead and its files closed: now let arx stop
    if isinstance(started, str):
        return result

    wall = time.monotonic() - start
    rc = proc.returncode
    scanner = output.scanner
    value, problem, implied = scanner.outcome()
    if scanner.pruned:
        last = scanner.curve.points[-1]
        status = ExecStatus.PRUNED
        reason = (f"pruned at {scanner.curve.unit} {last[0]:g}: {spec.metric} {last[1]:.6g} "
                  "trailed the best's curve")
    elif timed_out:
        status, reason = ExecStatus.TIMEOUT, f"timed out after {spec.timeout_s:.1f} s"
    elif interrupted is not None:
        status = ExecStatus.INTERRUPTED
        reason = f"arx received {signal.Signals(interrupted).name}; the trial was stopped"
    elif implied is ExecStatus.FAIL:
        status, reason = ExecStatus.FAIL, problem + (f" (exit code {rc})" if rc else "")
    elif rc != 0:
        status, reason = ExecStatus.CRASH, _exit_reason(rc)
    elif implied is not None:
        status, reason = implied, problem or ""
    else:
        status, reason = ExecStatus.OK, f"{spec.metric} = {value:.6g}"
    return TrialResult(
        status=status,
        metric=value if status is ExecStatus.OK else None,
        returncode=rc,
        wall_s=wall,
        summary=dict(scanner.summary),
        log_tail="\n".join(output.tail),
        reason=reason,
        usage=sampler.usage(),
        digest=scanner.digest,
        metric_text=scanner.raw.strip()[:40] if status is ExecStatus.OK and scanner.raw else None,
        curve=scanner.points(status is ExecStatus.OK), curve_unit=scanner.curve.unit,
        curve_stride=scanner.curve.stride, curve_end=scanner.curve.end(),
    )


class _Output:
    """Takes raw output blocks: appends them to the log, and feeds whole lines to the scanner,
    the tail and ``on_line``."""

    def __init__(
        self, scanner: _Scanner, log: IO[bytes] | None, on_line: Callable[[str], None] | None
    ):
        self.scanner = scanner
        self.log = log
        self.on_line = on_line
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = b""

    def feed(self, block: bytes) -> None:
        if self.log is not None:
            self.log.write(block)
        *lines, self._partial = (self._partial + block).split(b"\n")
        if len(self._partial) >= _CHUNK:
            lines.append(self._partial)
            self._partial = b""
        for raw in lines:
            self._line(raw)

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        line = _display(raw.decode("utf-8", errors="replace"))
        self.scanner.feed(line)
        self.tail.append(line)
        if self.on_line is not None:
            self.on_line(line)


def _open_log(path: Path | None) -> AbstractContextManager[IO[bytes] | None]:
    if path is None:
        return nullcontext()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb", buffering=0)  # unbuffered: `tail -f` on the log is live


def _start(spec: TrialSpec, env: dict[str, str], log: IO[bytes] | None) -> subprocess.Popen | str:
    """The running child, or why it could not start (a missing cwd is the target's failure)."""
    try:
        proc = start_group(["/bin/sh", "-c", spec.command], spec.cwd, env)
    except OSError as exc:
        reason = f"could not start the command in {spec.cwd}: {exc.strerror or exc}"
        if log is not None:
            log.write(f"arx: {reason}\n".encode())
        return reason
    if spec.pid_path is not None:
        try:
            write_pid_file(Path(spec.pid_path), proc.pid, spec.command)
        except BaseException:
            kill_group(proc.pid, proc)
            raise
    return proc


def _supervise(
    proc: subprocess.Popen, timeout_s: float, start: float, output: _Output, guard: SignalGuard
) -> tuple[bool, int | None]:
    """Pump output to ``output`` until exit or timeout, then kill whatever is left of the group.

    Returns (timed_out, the signal that stopped it early or None).
    A reader thread does the blocking reads; this thread handles lines, so ``on_line`` runs on
    the caller's thread and the deadline holds even when the child is silent.
    """
    assert proc.stdout is not None
    lines: queue.Queue[bytes | None] = queue.Queue(maxsize=256)
    fd = proc.stdout.fileno()

    def read() -> None:
        try:
            for block in iter(lambda: os.read(fd, _CHUNK), b""):
                lines.put(block)
        except (OSError, ValueError):
            pass
        finally:
            lines.put(None)

    reader = threading.Thread(target=read, name=f"trial-{proc.pid}-reader", daemon=True)
    reader.start()
    deadline = start + timeout_s
    timed_out = False
    interrupted: int | None = None
    exited_at: float | None = None
    eof = False  # the reader's end marker was taken: every block before it was fed
    try:
        guard.arm()  # a signal caught since run_trial began raises here
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            try:
                chunk = lines.get(timeout=min(deadline - now, 0.2))
            except queue.Empty:
                if proc.poll() is not None:  # exited; stragglers may still hold the pipe
                    kill_group(proc.pid, proc, grace=1.0)
                    exited_at = exited_at or now
                    if now - exited_at > 2.0:  # held by a process outside the group
                        break
                continue
            if chunk is None:  # EOF; the child may still run with its output closed
                eof = True
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
                break
            output.feed(chunk)
            if output.scanner.pruned:
                break
    except Interrupted as exc:
        interrupted = exc.signum
    except BaseException:
        guard.disarm()
        kill_group(proc.pid, proc)
        raise
    guard.disarm()
    # leave nothing behind: after a timeout, an interruption, or stragglers of a normal exit.
    # A signal arriving from now on is only recorded, and re-delivered when we are done.
    kill_group(proc.pid, proc)
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:  # the child left its group (setsid); kill it directly
        proc.kill()
        proc.wait()
    end = time.monotonic() + 2.0
    while not eof and time.monotonic() < end:  # lines still in the pipe or queue when we stopped
        try:
            chunk = lines.get(timeout=0.05)
        except queue.Empty:
            if not reader.is_alive():
                break
            continue
        if chunk is None:
            break
        output.feed(chunk)
    output.close()
    if not reader.is_alive():
        proc.stdout.close()
    return timed_out, interrupted


def _exit_reason(rc: int) -> str:
    if rc < 0:
        name = _signal_name(-rc)
        extra = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return f"killed by {name}{extra}"
    if rc == 127:
        return "exit code 127 (command not found)"
    if rc == 126:
        return "exit code 126 (command not executable)"
    if 128 < rc < 128 + 65:  # the shell reports a child killed by signal N as 128+N
        name = _signal_name(rc - 128)
        extra = ", out of memory?" if rc - 128 == signal.SIGKILL else ""
        return f"exit code {rc} (killed by {name}{extra})"
    return f"exit code {rc}"


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
