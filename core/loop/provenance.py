"""What ran a run: ``runs/<name>/provenance.jsonl``, one line per start and per resume.

A replay re-runs the loop's code, so it reproduces a branch only with the versions that decided
it: ``collect`` notes them (Python, arx, optuna, ruff, libcst; torch when the target imports it,
found by package metadata: arx never imports torch), the machine (platform, CPU model, GPU
models when ``nvidia-smi -L`` lists them), the command line, the target's command and the data
fingerprint the trace recorded last. ``write_provenance`` appends the line to the run's
worktree (the next commit carries it); `arx replay` compares it with its own machine first
(``differences``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from arx.core.execution.env import scrub_env
from arx.core.execution.process import kill_group, start_group
from arx.core.loop.trace import Trace
from arx.core.repo.workspace import Workspace
from arx.core.states import Event, Occasion

#: the packages whose version can change a run's decisions, as pip names them
PACKAGES = {"arx": "arx-autoresearch", "optuna": "optuna", "ruff": "ruff", "libcst": "libcst"}
#: a target that imports one of these gets its version noted too
TARGET_PACKAGES = {"torch": "torch"}
_IMPORT = r"^\s*(?:import|from)\s+{name}\b"


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(target_source: str = "") -> dict[str, str | None]:
    """The versions that decide a run here: Python, arx, optuna, ruff, libcst, and the target's
    own heavy packages (torch) when its source imports them."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    found.update({key: package_version(dist) for key, dist in PACKAGES.items()})
    for key, dist in TARGET_PACKAGES.items():
        if re.search(_IMPORT.format(name=re.escape(key)), target_source, re.MULTILINE):
            found[key] = package_version(dist)
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_models(timeout_s: float = 10.0) -> list[str]:
    """``nvidia-smi -L`` lines (UUIDs cut), or nothing when there is no such tool or it fails."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        proc = start_group([tool, "-L"], Path.cwd(), scrub_env(untrusted=True), text=True)
    except OSError:
        return []
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, proc)
        return []
    if proc.returncode != 0:
        return []
    return [re.sub(r"\s*\(UUID:[^)]*\)", "", line).strip() for line in out.splitlines()
            if line.strip()]


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu": _cpu_model(), "cpus": os.cpu_count(), "gpu": _gpu_models()}


def collect(ws: Workspace, occasion: Occasion, argv: Sequence[str]) -> dict[str, Any]:
    """One provenance line for ``ws`` as it starts or resumes now."""
    source = "".join((ws.path / p).read_text(errors="replace")
                     for p in ws.config.target.paths() if (ws.path / p).exists())
    fingerprints = [e.get("data_fingerprint") for e in Trace(ws.path / ws.trace_rel).events()
                    if e.get("event") == Event.TRIAL and e.get("data_fingerprint")]
    return {"event": occasion.value, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(source), "machine": machine(), "argv": list(argv),
            "command": ws.config.target.command, "iterations": ws.config.iterations,
            "data_fingerprint": fingerprints[-1] if fingerprints else None}


def write_provenance(ws: Workspace, argv: Sequence[str]) -> dict[str, Any]:
    """Append the line of this start or resume to ``runs/<name>/provenance.jsonl``."""
    line = collect(ws, Occasion.RESUME if ws.resumed else Occasion.START, argv)
    path = ws.path / ws.provenance_rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    return line


def read_provenance(text: str | None) -> list[dict[str, Any]]:
    """The lines of a provenance file (unreadable lines are skipped: it is a record, not a
    journal the run depends on)."""
    out = []
    for line in (text or "").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


@dataclass(frozen=True)
class Difference:
    """A recorded version or machine fact that differs from this machine's."""

    key: str
    recorded: tuple[str, ...]  # ("4.5.0",), or ("4.5.0 (start 1)", "4.6.0 (resume 2)")
    here: str
    decisive: bool

    def describe(self) -> str:
        return f"{self.key} {', '.join(self.recorded)} on the branch, {self.here} here"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "recorded": list(self.recorded), "here": self.here,
                "decisive": self.decisive}


def _minor(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else version


def differences(recorded: Sequence[Mapping[str, Any]], decisive: Iterable[str],
                here_versions: Mapping[str, str | None] | None = None,
                here_machine: Mapping[str, Any] | None = None) -> list[Difference]:
    """Each version or machine fact the branch's lines record that this machine does not have.
    ``decisive`` names the versions that can change the replay's decisions (python compares by
    minor version); the others (torch, platform, CPU, GPU) matter to ``--retrain`` only."""
    decisive = set(decisive)
    here_v = dict(here_versions if here_versions is not None else versions("import torch\n"))
    here_m = dict(here_machine if here_machine is not None else machine())
    out = []
    keys = sorted({k for line in recorded for k in (line.get("versions") or {})})
    for key in keys:
        values = _labelled(recorded, lambda line, k=key: (line.get("versions") or {}).get(k))
        here = here_v.get(key)
        same = (lambda v, h=here: _minor(v) == _minor(h)) if key == "python" \
            else (lambda v, h=here: v == h)
        if any(not same(v) for v, _ in values):
            out.append(Difference(key, _parts(values), here or "(not installed)",
                                  key in decisive))
    for key in ("platform", "cpu", "gpu"):
        values = _labelled(recorded, lambda line, k=key: _fact((line.get("machine") or {}).get(k)))
        here = _fact(here_m.get(key))
        if values and any(v != here for v, _ in values):
            out.append(Difference(key, _parts(values), here or "(none)", False))
    return out


def _fact(value: Any) -> str | None:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) or None
    return None if value is None else str(value)


def _labelled(lines: Sequence[Mapping[str, Any]], get: Any) -> list[tuple[str, str]]:
    """(value, which line) for each line that records the fact, in order."""
    out = []
    for n, line in enumerate(lines):
        value = get(line)
        if value is not None:
            out.append((str(value), f"{line.get('event') or 'line'} {n + 1}"))
    return out


def _parts(values: list[tuple[str, str]]) -> tuple[str, ...]:
    if len({v for v, _ in values}) == 1:
        return (values[0][0],)
    return tuple(f"{v} ({where})" for v, where in values)
