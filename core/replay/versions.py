"""The versions a branch was made with, against this machine's: checked before a replay runs.

A replay runs this machine's arx, optuna, ruff and libcst on this Python; another version of
any of them can change a decision (optuna's TPE samples, ruff's verdict at the gate, libcst's
rewriting of a constant). ``check_provenance`` reads the branch's
``runs/<name>/provenance.jsonl`` (one line per start and resume) and refuses (exit 2) a branch
made with other versions that decide this run, naming each (``optuna 4.5.0 on the branch, 5.0.0
here``), unless ``allow_version_drift``; then a divergence report names them as the likely
cause. Other facts (torch, platform, CPU, GPU) only matter to ``--retrain`` and are reported.
A branch made before provenance was recorded replays with a note.
"""

from __future__ import annotations

from typing import Any

from arx.core.loop.provenance import PACKAGES, differences
from arx.core.replay.source import Recording, ReplayError
from arx.core.states import Event, Group, Occasion


def decisive_versions(rec: Recording) -> set[str]:
    """The versions that can change this run's decisions on replay."""
    keys = {"arx", "python", "libcst"}
    if rec.proposer == "optuna":
        keys.add("optuna")
    if Group.of(rec.config.group).has_level2 or any(
            e.get("event") == Event.LEVEL2 for e in rec.events):
        keys.add("ruff")  # the Level-2 gate
    return keys


def check_provenance(rec: Recording, allow_version_drift: bool = False) -> dict[str, Any]:
    """What the branch's provenance says against this machine; ReplayError (exit 2) when a
    version that decides the run differs and ``allow_version_drift`` is false."""
    if not rec.provenance:
        return {"recorded": 0, "differences": [], "decisive": [],
                "notes": [f"{rec.branch} records no provenance ({rec.provenance_rel}: made by "
                          "an arx before it was written), so the versions that made it are "
                          "not checked"]}
    found = differences(rec.provenance, decisive_versions(rec))
    blocking = [d for d in found if d.decisive]
    if blocking and not allow_version_drift:
        pins = [f"{PACKAGES[d.key]}=={d.recorded[0]}" for d in blocking
                if d.key in PACKAGES and len(d.recorded) == 1]
        python = [f"Python {d.recorded[0]}" for d in blocking if d.key == "python"]
        raise ReplayError(
            f"{rec.branch} was made with other versions than this machine's, which can change "
            "its decisions: " + "; ".join(d.describe() for d in blocking),
            hint="replay with the versions that made it"
                 + (f" (`pip install {' '.join(pins)}`)" if pins else "")
                 + (f" on {python[0]}" if python else "")
                 + ", or pass --allow-version-drift to replay anyway (a divergence is then "
                   "put down to these differences)")
    notes = [f"version drift allowed: {d.describe()}" for d in blocking]
    if rec.provenance[0].get("event") != Occasion.START:
        notes.append(f"{rec.branch} records no provenance for its start (made by an arx before "
                     f"{rec.provenance_rel} was written): only its resumes are checked")
    notes += [f"{d.describe()} (matters to --retrain only)" for d in found if not d.decisive]
    return {"recorded": len(rec.provenance), "differences": [d.as_dict() for d in found],
            "decisive": [d.describe() for d in blocking], "notes": notes}
