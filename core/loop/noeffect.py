"""Silent no-ops: changes that never reach the training.

A script run as ``python train.py config/x.py --n_layer=2`` lets its config file and flags
override what arx rewrites, so a trial trains exactly the best configuration again and measures
exactly the best metric. ``command_overrides`` names the flags and config files of
``[target] command`` that set tuned parameters (``arx init``, ``arx run`` and ``arx check`` warn);
``settle`` records a trial whose metric equals the best to the last printed digit as
``no_effect`` instead of ``discard``; ``check_streak`` stops a run after ``STREAK`` of them in a
row, with an explanation.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path

from arx.core.codemods.constants import discover_constants
from arx.core.config import RunConfig
from arx.core.errors import PatchError, RunError
from arx.core.loop.trace import Trace
from arx.core.states import Event, TrialKind, TrialState

__all__ = ["STREAK", "check_streak", "command_overrides", "settle"]

#: no_effect trials in a row that stop a run
STREAK = 3
_CONFIG_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".conf")


def _key(name: str) -> str:
    """How a flag or a parameter reads on a command line: ``--Batch-Size`` and
    ``Args.batch_size`` are both ``batch_size``."""
    return name.rsplit(".", 1)[-1].lstrip("-").replace("-", "_").lower()


def command_overrides(command: str, target_file: str, names: Iterable[str],
                      cwd: Path) -> list[str]:
    """Warnings, one per flag or config file of ``command`` (after the target script) that
    sets one of the tuned parameter ``names``: arx's changes to them would have no effect."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return []
    script = Path(target_file).name
    if not script.endswith(".py"):  # a config file as the target: the script reads it
        script = next((Path(t).name for t in tokens if t.endswith(".py")), script)
    at = next((i for i, t in enumerate(tokens) if Path(t).name == script), None)
    args = tokens[at + 1:] if at is not None else tokens[1:]
    keys: dict[str, list[str]] = {}
    for name in names:
        keys.setdefault(_key(name), []).append(name)
    out = []
    for i, arg in enumerate(args):
        if arg.startswith("-") and len(arg) > 1:
            flag, eq, _ = arg.partition("=")
            hit = keys.get(_key(flag))
            if hit:
                shown = arg if eq or i + 1 >= len(args) else f"{arg} {args[i + 1]}"
                out.append(f"the command passes `{shown}`, which sets {', '.join(hit)}: arx's "
                           "changes to it have no effect")
        elif arg.endswith(_CONFIG_SUFFIXES) and Path(arg).name != script:
            out.append(_config_file(arg, cwd, keys))
    return [w for w in out if w]


def _config_file(arg: str, cwd: Path, keys: dict[str, list[str]]) -> str:
    path = cwd / arg
    if arg.endswith(".py") and path.is_file():
        try:
            sets = [c.name for c in discover_constants(path.read_text())]
        except (PatchError, OSError, UnicodeDecodeError):
            sets = []
        hit = sorted({n for s in sets for n in keys.get(_key(s), [])})
        if not hit:
            return ""
        return (f"the command passes the config file {arg}, which sets {', '.join(hit)}: arx's "
                "changes to them have no effect")
    return (f"the command passes the config file {arg}: a tuned parameter it sets ignores "
            "arx's changes")


def settle(state: TrialState | None, metric: float | None, best: float | None,
           rules: int, digest: str | None = None,
           best_digest: str | None = None) -> TrialState | None:
    """``no_effect`` for a discard whose metric equals the best exactly (both are parsed from
    the printed digits, so equal floats are equal to the last printed digit); runs made before
    this rule (``rules`` 1) keep ``discard``. From rules 5 on, one equal number is not enough
    when both runs' output digests are known (``TrialResult.digest``): a trial that printed
    anything else differently (its losses, its other metrics) did reach the training, and a
    coarse metric (a 2-decimal accuracy) just did not move: ``discard``."""
    if rules >= 2 and state is TrialState.DISCARD and metric is not None and metric == best:
        if rules >= 5 and digest and best_digest and digest != best_digest:
            return state
        return TrialState.NO_EFFECT
    return state


def check_streak(trace: Trace, config: RunConfig, names: Iterable[str], cwd: Path,
                 coarse: bool = False) -> None:
    """Raise ``RunError`` when the last ``STREAK`` measured trials (since the last resume)
    were all ``no_effect``: the loop is spending its budget on changes that do not arrive.
    ``names``: the tuned parameters; ``cwd``: where the command runs (to read config files).
    Never from rules 5 on when the metric is ``coarse`` (``noise.coarse``): equal values of a
    metric that moves in steps wider than its noise do not show that nothing arrived."""
    if config.rules < 2 or (config.rules >= 5 and coarse):
        return
    streak: list[dict] = []
    for event in trace.events():
        if event.get("event") == Event.RESUME:
            streak = []
        elif event.get("event") == Event.TRIAL and event.get("kind") == TrialKind.TRIAL:
            status = event.get("status")
            if status in (TrialState.INVALID, TrialState.INTERRUPTED):
                continue
            streak = streak + [event] if status == TrialState.NO_EFFECT else []
    if len(streak) < STREAK:
        return
    command, run = config.target.command, config.name
    overrides = command_overrides(command, config.target.file, names, cwd)
    metric = streak[-1].get("metric")
    tried = "; ".join(", ".join(f"{k}={v!r}" for k, v in (e.get("changes") or {}).items())
                      for e in streak[-STREAK:])
    why = ("\n  " + "\n  ".join(overrides)) if overrides else ""
    raise RunError(
        f"the last {STREAK} trials measured exactly the best metric ({metric}) although each "
        f"changed the script ({tried}): the changes do not reach the training{why}",
        hint=f"check that `{command}` does not override the tuned parameters (flags, config "
        f"files, values set at run time; `arx check` shows the warnings), or print the metric "
        f"with more digits; then `arx run --resume {run}`",
    )
