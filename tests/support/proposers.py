"""Scripted proposers (the boundary the loop tests fake): a fixed list of changes, and one that
finds the truth target's optimum at once (``truth_train.py``: a known optimum, seeded noise of
sd 0.02), then flips a setting the truth ignores."""

from __future__ import annotations

from pathlib import Path

from arx.core.proposers.base import Proposal, Proposer

TRUTH = Path(__file__).with_name("truth_train.py")
#: the known-good change: worth 0.110, 5.5 noise sd
GOOD = {"LR": 0.004, "WIDTH": 128, "DROPOUT": 0.05}


class GoodThenNorm(Proposer):
    """``GOOD`` at iteration 1 (it is confirmed, then kept), then NORM flips, which the truth
    ignores but the seeded noise does not (some look good enough to confirm)."""

    name = "scripted"

    def propose(self, request, feedback=None):
        if request.iteration == 1:
            return [Proposal(changes=GOOD, hypothesis="the known optimum", source=self.name)]
        norm = "rms" if request.best_config.get("NORM") == "layer" else "layer"
        return [Proposal(changes={"NORM": norm}, hypothesis="no effect", source=self.name)]


class Scripted(Proposer):
    """The given changes, one per iteration."""

    name = "scripted"

    def __init__(self, script):
        self.script = list(script)

    def propose(self, request, feedback=None):
        changes = self.script.pop(0)
        return [Proposal(changes=changes, hypothesis=f"try {changes}", source=self.name)]
