"""Learning curves: the metric lines a trial prints before its last one, each with its progress.

A script that evaluates as it trains prints its metric several times (``val_bpb: 1.23`` after
each evaluation); the last such line is the trial's metric, every one before it is a point of its
curve. A point's progress is the step the output last named (``[target] progress_regex``, group 1;
by default a ``step N`` / ``iter N`` / ``iteration N`` in any line), else the seconds since the
trial started. The unit is fixed by the first point (``step`` or ``s``), so one curve never mixes
them.

A curve is bounded: past ``MAX_POINTS`` points every other one is dropped and only every
``stride``-th new point is taken, so what is kept is a deterministic function of the points
printed (the points whose index is a multiple of the stride), whatever their number. Reading a
point costs a regex search on the lines that name a step or the metric (``bench/curve_cost.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

#: a line naming the step: ``step 120``, ``step: 120``, ``iter 120``, ``iteration=120``
DEFAULT_PROGRESS = r"\b(?:step|iter|iteration)\b\s*[:=#]?\s*(\d+)"
#: most points one curve keeps (then every other is dropped, see the module docstring)
MAX_POINTS = 256
#: the units of a point's progress
STEP, SECONDS = "step", "s"

Point = tuple[float, float]  # (progress, value)


class CurveReader:
    """Collects a trial's curve from its output lines (``execution.trial._Scanner`` feeds it).

    ``step_line`` is given every line that may name a step; ``point`` every metric value that is
    not the summary's. ``point`` returns whether the point was kept (a thinned-out point is not
    shown to a watcher, so a replay sees every point a decision was made on)."""

    def __init__(self, progress_regex: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.pattern = re.compile(progress_regex or DEFAULT_PROGRESS, re.IGNORECASE)
        self.custom = progress_regex is not None
        self.clock = clock
        self.started = clock()
        self.step: float | None = None
        self.unit: str | None = None
        self.points: list[Point] = []
        self.stride = 1
        self.seen = 0  # points printed, kept or not

    def step_line(self, line: str) -> None:
        m = self.pattern.search(line)
        if m is not None:
            try:
                self.step = float(m.group(1) if self.pattern.groups else m.group(0))
            except ValueError:
                pass

    def end(self) -> float | None:
        """Where the trial's progress ended, in the curve's unit: the last step its output
        named, or the seconds it ran (None without a curve)."""
        if self.unit == STEP:
            return self.step
        return round(self.clock() - self.started, 3) if self.unit == SECONDS else None

    def point(self, value: float) -> bool:
        """Add the metric ``value`` printed now; whether it is kept."""
        index = self.seen
        self.seen += 1
        if self.unit is None:
            self.unit = STEP if self.step is not None else SECONDS
        if index % self.stride:
            return False
        progress = self.step if self.unit == STEP and self.step is not None \
            else round(self.clock() - self.started, 3)
        self.points.append((float(progress), value))
        if len(self.points) > MAX_POINTS:
            self.stride *= 2
            self.points = self.points[::2]  # index k*stride/2 -> kept iff a multiple of stride
            return index % self.stride == 0
        return True


def share_of(progress: float, total: float | None) -> float | None:
    """A point's progress as a share of the trial's whole (None when the whole is unknown)."""
    if not total or total <= 0:
        return None
    return progress / total


def value_at(curve: Sequence[Sequence[float]], x: float) -> float | None:
    """The curve's value at ``x``, interpolated linearly between its points (``curve`` sorted
    by x); None outside its range."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return float(curve[-1][1])
