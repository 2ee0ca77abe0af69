"""A metric axis that stays readable after one diverged trial, and labels that never overprint.

One trial at 1e18 on a linear axis put the baseline, every keep and the noise band on one line
at 0. ``y_range`` sets the axis from what must be readable (the baseline, the kept values, the
best so far with its noise band) and the measured values inside a robust band (``FENCE``
spreads around the median); what lies beyond is an outlier, drawn on the edge with its
value. A body that spans ``DECADES`` or more goes on a log axis (symlog when it crosses zero).
``declutter`` moves text labels that would overlap, once the figure's layout is known.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: a measured value this many spreads from the median is an outlier; the spread is the largest
#: of: the median absolute deviation (as an sd), the span of the values that must be readable,
#: and ``RELATIVE`` of the median (a search whose discards mostly equal each other)
FENCE = 5.0
MAD_SD = 1.4826
RELATIVE = 0.05
#: a body whose largest magnitude is this many times its smallest goes on a log axis
DECADES = 100.0
#: room above the body for the markers drawn along the top (as a share of the body's span)
TOP_ROOM = 0.4


@dataclass(frozen=True)
class YRange:
    """The limits and scale of a metric axis, and the values that fall outside it."""

    low: float
    high: float
    scale: str  # "linear", "log" or "symlog"
    linthresh: float | None = None  # (symlog) the linear range around zero
    above: tuple[tuple[int, float], ...] = ()  # (iteration, value) beyond the top
    below: tuple[tuple[int, float], ...] = ()  # ... beyond the bottom


def y_range(core: Iterable[float], measured: Sequence[tuple[int, float]]) -> YRange | None:
    """The axis for ``measured`` (iteration, value) points that keeps every ``core`` value
    readable; None without any value."""
    core = [float(v) for v in core]
    values = [float(v) for _, v in measured]
    if not core and not values:
        return None
    centre = statistics.median(values or core)
    mad = statistics.median(abs(v - centre) for v in values) if values else 0.0
    spread = max(MAD_SD * mad, (max(core) - min(core)) if core else 0.0,
                 RELATIVE * abs(centre), 1e-12)
    inside = [v for v in values if abs(v - centre) <= FENCE * spread]
    body = core + inside or values
    lo, hi = min(body), max(body)
    scale, linthresh = "linear", None
    if lo > 0 and hi / lo >= DECADES:
        scale = "log"
        low, high = lo / 1.2, hi * (hi / lo) ** TOP_ROOM * 1.2
    else:
        nonzero = [abs(v) for v in body if v != 0]
        if lo < 0 < hi and nonzero and max(nonzero) / min(nonzero) >= DECADES:
            scale, linthresh = "symlog", min(nonzero)
        pad = (hi - lo) * 0.05 or abs(hi) * 0.01 or 0.01
        low, high = lo - pad, hi + pad + (hi - lo) * TOP_ROOM
    return YRange(low, high, scale, linthresh,
                  tuple((i, v) for i, v in measured if v > high),
                  tuple((i, v) for i, v in measured if v < low))


def declutter(texts: Sequence[Any], renderer: Any) -> None:
    """Move each text right until it overlaps none placed before it (in drawing order);
    ``texts`` share one axes whose x is in data units. Call once the layout is final."""
    placed = []
    for text in texts:
        box = text.get_window_extent(renderer)
        for _ in range(len(texts) * 4):
            hit = next((p for p in placed if box.overlaps(p)), None)
            if hit is None:
                break
            ax = text.axes
            per_unit = abs(ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0])
            text.set_x(text.get_position()[0] + (hit.x1 - box.x0 + 2.0) / max(per_unit, 1e-9))
            box = text.get_window_extent(renderer)
        placed.append(box)
