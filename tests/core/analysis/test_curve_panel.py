"""The report's learning-curve panel: pruned trials faint, up to where they were stopped, and
the same outlier-proof y-range as the metric panel (a diverged curve does not flatten the rest)."""

from __future__ import annotations

from arx.core.analysis.figures import LABEL_GID, build_figure
from arx.core.analysis.report import RunData


def rec(i, status, curve, metric=None):
    return {"event": "trial", "iteration": i, "kind": "baseline" if i == 0 else "trial",
            "status": status, "metric": metric, "changes": {} if i == 0 else {"LR": i},
            "curve": curve, "curve_unit": "step"}


def test_pruned_curves_are_faint_and_end_where_they_stopped():
    full = [[12, 2.0], [24, 1.5], [36, 1.3], [48, 1.2]]
    run = RunData("c", metric="val_bpb", iterations=3, records=(
        rec(0, "baseline", full, 1.1), rec(1, "pruned", [[12, 2.6], [24, 2.1], [36, 1.9]]),
        rec(2, "discard", [[p, v + 0.01] for p, v in full], 1.12)))
    _fig, _drawn, axes = build_figure([run])
    ax = axes["c:curves"]
    by_label = {line.get_label(): line for line in ax.lines}
    pruned = by_label["pruned (stopped)"]
    assert list(pruned.get_xdata()) == [12, 24, 36] and pruned.get_alpha() == 0.25
    assert list(by_label["baseline"].get_xdata()) == [12, 24, 36, 48]
    assert by_label["baseline"].get_alpha() is None  # drawn in full
    assert "1 trial(s) pruned" in ax.get_title() and ax.get_xlabel() == "step"


def test_a_run_without_curves_has_no_curve_panel():
    run = RunData("n", records=(rec(0, "baseline", None, 1.0), rec(1, "discard", None, 1.1)))
    _fig, _drawn, axes = build_figure([run])
    assert "n:curves" not in axes and "n:metric" in axes


def test_a_diverged_curve_leaves_the_baseline_and_keep_curves_readable():
    full = [[12, 2.0], [24, 1.5], [36, 1.3], [48, 1.2]]
    run = RunData("o", metric="val_bpb", iterations=3, records=(
        rec(0, "baseline", full, 1.2), rec(1, "keep", [[p, v - 0.1] for p, v in full], 1.1),
        rec(2, "discard", [[12, 2.2], [24, 1e18], [36, 3e18], [48, float("nan")]])))
    _fig, _drawn, axes = build_figure([run])
    ax = axes["o:curves"]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear"
    for _p, v in full:  # every point of the baseline's and the keep's curves, readably
        assert low < v < high and low < v - 0.1 < high
    assert high - low < 3.0  # a 1e18 axis would span 3e18
    # the diverged curve: one marker on the top edge, at its most extreme point, with its value
    (edge,) = [c for c in ax.collections if c.get_label() == "off the axis (value)"]
    assert [x for x, _ in edge.get_offsets()] == [36]
    assert [t.get_text() for t in ax.texts if t.get_gid() == LABEL_GID] == ["3e+18"]
