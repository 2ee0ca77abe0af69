"""Small-sample statistics for decisions under noise, in plain Python (no scipy).

A spread estimated from three runs is usually too small: the sample standard deviation of 3
normal draws is below the true one 63% of the time (median ratio 0.83), and a margin in units
of it is then a margin in units of too little. ``sd_upper`` is the one-sided upper confidence
bound of a standard deviation from ``df`` degrees of freedom (chi-square); decisions use it at
``SD_CONFIDENCE`` = 0.5, the median-unbiased estimate (as often above the true sd as below: x1.20
for 3 runs, x1.09 for 5, tending to 1 as the run pools more measurements). A bound at 0.8 (x2.12
for 3 runs) kept no truly worse config in docs/noise.md's table but halved what the search
gained, so it is not the default. ``pooled`` is the pooled estimate over groups of repeated
measurements of one configuration each.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Sequence

#: the confidence of the upper bound on the spread that decisions use (rules >= 5): 0.5 is the
#: median-unbiased estimate (docs/noise.md measures 0.5 and 0.8 against the raw estimate)
SD_CONFIDENCE = 0.5


def _lower_gamma_regularized(a: float, x: float) -> float:
    """P(a, x), the regularized lower incomplete gamma function (series / continued fraction,
    as in Numerical Recipes)."""
    if x <= 0:
        return 0.0
    if x < a + 1:  # series
        term = total = 1.0 / a
        n = a
        for _ in range(500):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    # continued fraction for Q(a, x), Lentz's method
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return 1.0 - math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_cdf(x: float, df: int) -> float:
    return _lower_gamma_regularized(df / 2.0, x / 2.0)


def chi2_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of the chi-square distribution with ``df`` degrees of freedom."""
    if not 0 < p < 1 or df < 1:
        raise ValueError("chi2_quantile needs 0 < p < 1 and df >= 1")
    lo, hi = 0.0, max(1.0, 4.0 * df)
    while chi2_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if chi2_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


@functools.lru_cache(maxsize=256)
def _factor(df: int, confidence: float) -> float:
    return math.sqrt(df / chi2_quantile(1.0 - confidence, df))


def upper_factor(df: int, confidence: float | None = None) -> float:
    """What a sample sd from ``df`` degrees of freedom is multiplied by to bound the true sd
    from above with ``confidence`` (default ``SD_CONFIDENCE``): sqrt(df / chi2_{1-confidence}
    (df)). At 0.5: 1.20 for df 2, 1.03 for df 10; at 0.8: 2.12 for df 2, 1.27 for df 10."""
    if df < 1:
        return 1.0
    return _factor(int(df), SD_CONFIDENCE if confidence is None else float(confidence))


def sd_upper(sd: float, df: int, confidence: float | None = None) -> float:
    return sd * upper_factor(df, confidence)


def pooled(groups: Iterable[Sequence[float | None]]) -> tuple[float, int]:
    """(pooled sd, degrees of freedom) over groups of repeated measurements, each group one
    configuration; groups of one value add nothing. (0.0, 0) when no group has two values."""
    squares, df = 0.0, 0
    for group in groups:
        values = [float(v) for v in group if isinstance(v, (int, float))]
        if len(values) > 1:
            mean = statistics.fmean(values)
            squares += sum((v - mean) ** 2 for v in values)
            df += len(values) - 1
    return ((squares / df) ** 0.5 if df else 0.0), df
