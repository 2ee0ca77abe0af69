"""What a failed trial's log says, in one line, and what to do about it.

``last_error`` finds the line that names the failure (``ModuleNotFoundError: No module named
'wandb'``) in a log tail; ``failure_hint`` turns the common causes into a fix: a file that exists
in the checkout but not in the run's worktree (git does not track it: ``[target] include``), a
missing module. ``log_file`` finds a trial's log under the run's log directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["failure_hint", "last_error", "log_file", "metric_regex_hint", "missing_path"]

_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)|error|Error|"
                         r"FAIL|Killed|Segmentation fault)\b.*")
_MISSING = re.compile(r"(?:No such file or directory|FileNotFoundError|not found)[^'\"]*"
                      r"['\"]([^'\"]+)['\"]")
_NO_MODULE = re.compile(r"No module named ['\"]([\w.]+)['\"]")


def last_error(log_tail: str) -> str | None:
    """The last line of a log that names an error (``ValueError: ...``), else None."""
    for line in reversed(log_tail.splitlines()):
        if _ERROR_LINE.match(line):
            return line.strip()[:300]
    return None


def missing_path(log_tail: str) -> str | None:
    """The path a ``FileNotFoundError`` (or ``No such file or directory``) names, if any."""
    found = _MISSING.findall(log_tail)
    return found[-1] if found else None


def _include_entry(rel: str, root: Path) -> str:
    """The top-most folder of ``rel`` that the checkout has but git tracks nothing in, else
    ``rel`` itself: what to name in ``[target] include``."""
    parts = PurePosixPath(rel).parts
    for k in range(1, len(parts)):
        head = PurePosixPath(*parts[:k]).as_posix()
        if (root / head).is_dir():
            return head + "/"
    return rel


def failure_hint(log_tail: str, root: Path, worktree: Path, run: str | None = None) -> str:
    """What to do about a failed trial of the run whose worktree is ``worktree`` (in the
    checkout ``root``): the fix for a known cause, else how to look closer."""
    missing = missing_path(log_tail)
    if missing is not None:
        path = Path(missing)
        rel = None
        if path.is_absolute():
            try:
                rel = path.resolve().relative_to(worktree.resolve()).as_posix()
            except (ValueError, OSError):
                rel = None
        else:
            rel = PurePosixPath(missing).as_posix().removeprefix("./")
        if rel and not rel.startswith("..") and (root / rel).exists():
            entry = _include_entry(rel, root)
            return (f"{rel} exists in your checkout but not in the run's worktree (git does not "
                    f"track it): add `include = [\"{entry}\"]` to [target] in arx.toml")
    module = _NO_MODULE.search(log_tail)
    if module is not None:
        return (f"the trial's Python has no module {module.group(1)!r}: install it, or lock "
                f"the parameter that turns it on (`[params] locked` in arx.toml)")
    then = f"; then `arx run --resume {run}`, or remove the run with `arx rm {run}`" if run else ""
    return f"`arx check` runs the command as a trial would and says what is wrong{then}"


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def metric_regex_hint(log_tail: str, metric: str) -> str | None:
    """For a trial that printed no ``metric: value`` line: a ``metric_regex`` built from the
    last line of the log that names the metric's words before a number (``| test loss  6.30
    |`` for ``test_loss`` -> ``test\\s+loss\\s+([-+0-9.eE]+)``), as a hint; None when no
    line does."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", metric) if w]
    if not words:
        return None
    pattern = re.compile(r"[^A-Za-z0-9]{0,3}".join(re.escape(w) for w in words)
                         + r"[\s:=|]*" + f"({_NUMBER})", re.IGNORECASE)
    for line in reversed(log_tail.splitlines()):
        m = pattern.search(line)
        if m:
            seen = line[m.start():m.end()]
            prefix = seen[:m.start(1) - m.start()].rstrip(" \t:=|")
            parts = [r"\s+" if p.isspace() else re.escape(p)
                     for p in re.split(r"(\s+)", prefix) if p]
            regex = "".join(parts) + r"[\s:=|]*([-+0-9.eE]+)"
            return (f"the log prints {seen.strip()!r} but no line `{metric}: value`: set "
                    f"metric_regex = '{regex}' in [target] of arx.toml (or pass --metric-regex "
                    "to `arx init`)")
    return None


def log_file(log_dir: Path, record: Mapping[str, Any]) -> Path | None:
    """The log of a trial record under ``log_dir`` (``0003-trial.log``, ``0003-trial-c1.log``
    for a parallel candidate, ``0000-noise-2.log``, ``0004-confirm-4-s2.log``,
    ``0008-verify-0-3.log``), if it is there."""
    stem = f"{int(record.get('iteration', 0)):04d}-{record.get('kind', 'trial')}"
    seq, of = record.get("seq") or 0, record.get("of")
    for name in (f"{stem}-c{seq}.log", f"{stem}-{seq}.log", f"{stem}-{of}-s{record.get('seed')}.log",
                 f"{stem}-{of}-{seq}.log", f"{stem}.log"):
        if (log_dir / name).is_file():
            return log_dir / name
    return None
