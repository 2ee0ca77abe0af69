"""Run-time guard around the managed runner's hooks.

Generated mechanisms pass the gate's simulation, but real data can still make a hook raise or
hang. Every hook call goes through ``GuardedRunner``: an exception, or a call longer than the
limit (SIGALRM, main thread only), becomes a ``MechanismFault`` that the engine answers by
reverting the mechanism and reloading the runner.
"""

from __future__ import annotations

import signal
import threading
import traceback
from typing import Any

from arx.core.levels.runnerload import HOOKS


class MechanismFault(Exception):
    """A runner hook raised or exceeded its time limit."""

    def __init__(self, hook: str, error: str):
        super().__init__(f"{hook}: {error.strip().splitlines()[-1] if error.strip() else hook}")
        self.hook = hook
        self.error = error


class _HookTimeout(Exception):
    pass


class GuardedRunner:
    """Wraps a runner; its hooks are called with a time limit and exceptions are faults."""

    def __init__(self, runner: Any, limit_s: float = 10.0):
        self._runner = runner
        self._limit_s = limit_s

    @property
    def inner(self) -> Any:
        return self._runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._runner, name)
        if name not in HOOKS or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, attr, args, kwargs)

        return call

    def _call(self, name: str, fn: Any, args: tuple, kwargs: dict) -> Any:
        timed = threading.current_thread() is threading.main_thread() and self._limit_s > 0
        previous = None
        if timed:
            def on_alarm(signum: int, frame: Any) -> None:
                raise _HookTimeout(f"{name} took longer than {self._limit_s:g} s")

            previous = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self._limit_s)
        try:
            return fn(*args, **kwargs)
        except _HookTimeout as exc:
            raise MechanismFault(name, f"{exc}\n{traceback.format_exc(limit=-4)}") from None
        except Exception:
            raise MechanismFault(name, traceback.format_exc(limit=-6)) from None
        finally:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
