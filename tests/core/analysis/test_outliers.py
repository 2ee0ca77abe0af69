"""A report stays readable after a diverged trial: the axis is set by the baseline, the keeps
and the noise band, the outlier is a marker on the edge with its value, and no two labels
overlap (matplotlib Agg: the test reads the axis limits and the labels' boxes)."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from arx.core.analysis.figures import LABEL_GID, build_figure
from arx.core.analysis.report import RunData
from arx.core.analysis.scale import declutter, y_range


def rec(i, status, metric, changes=None, **kw):
    return {"event": "trial", "iteration": i, "kind": "baseline" if i == 0 else "trial",
            "status": status, "metric": metric, "changes": changes or {"LR": i}, **kw}


def diverged_run(outlier=1e18):
    records = [rec(0, "baseline", 2.50), rec(1, "discard", 2.61), rec(2, "keep", 2.41),
               rec(3, "discard", outlier), rec(4, "discard", 2.47), rec(5, "keep", 2.38),
               rec(6, "discard", 2.52), rec(7, "discard", 2.44), rec(8, "keep", 2.30)]
    # four decisions at iteration 5 and two at 6: their labels used to print on one another
    events = [{"event": "level15", "iteration": 5, "cycle": 1, "freeze": ["DEPTH", "WD"],
               "unfreeze": [], "frozen": ["DEPTH", "WD"]},
              {"event": "level2", "iteration": 5, "cycle": 1, "mechanism": "Tabu",
               "verdict": "pass", "commit": "a1"},
              {"event": "level2", "iteration": 5, "cycle": 1, "mechanism": "Anneal",
               "verdict": "fail", "commit": "a2", "revert": "a3"},
              {"event": "level2", "iteration": 6, "cycle": 1, "mechanism": "Orthogonal",
               "verdict": "pass", "commit": "a4"},
              {"event": "level15", "iteration": 6, "cycle": 2, "freeze": [], "unfreeze": ["WD"],
               "frozen": ["DEPTH"]},
              {"event": "noise", "iteration": 0, "sd": 0.03, "n": 3, "mean": 2.5,
               "method": "seeds"}]
    return RunData("d", metric="val_bpb", group="C", iterations=8, records=tuple(records),
                   events=tuple(events))


@pytest.mark.parametrize("outlier", [1e18, 1e35, -1e18])
def test_a_diverged_trial_leaves_the_baseline_keeps_and_noise_band_readable(outlier):
    fig, _, axes = build_figure([diverged_run(outlier)])
    ax = axes["d:metric"]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear"
    # the baseline, every keep and the noise band (best +- sd) are inside, at a readable scale
    for v in (2.50, 2.41, 2.38, 2.30, 2.30 - 0.03, 2.50 + 0.03):
        assert low < v < high
    assert high - low < 1.0  # 0.3 of body: a 1e18 axis would span 1e18
    # the outlier is a marker on the edge it passed, with its value beside it
    (edge,) = [c for c in ax.collections if c.get_label() == "off the axis (value)"]
    assert [x for x, _ in edge.get_offsets()] == [3]
    values = [t.get_text() for t in ax.texts if t.get_gid() == LABEL_GID
              and not t.get_text().startswith("L")]
    assert values == [f"{outlier:.3g}"]


def test_no_two_labels_overlap():
    fig, drawn, axes = build_figure([diverged_run()])
    assert len(drawn) == 5  # every decision still drawn
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    texts = [t for t in axes["d:metric"].texts if t.get_gid() == LABEL_GID]
    assert len(texts) == 3  # iteration 5, iteration 6, the outlier's value
    five = next(t.get_text() for t in texts if "L1.5 c1" in t.get_text())
    assert five.split("\n") == ["L1.5 c1 freeze DEPTH,WD", "L2 activate Tabu", "L2 refuse Anneal"]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].overlaps(boxes[b]), (texts[a].get_text(), texts[b].get_text())


def test_a_metric_that_spans_decades_goes_on_a_log_axis():
    points = [(i, v) for i, v in enumerate([1000.0, 400.0, 120.0, 60.0, 30.0, 9.0])]
    yr = y_range([1000.0, 9.0], points)
    assert yr.scale == "log" and yr.low < 9.0 and yr.high > 1000.0 and not yr.above
    crossing = y_range([-500.0, 2.0, 0.5], [(1, -500.0), (2, 2.0), (3, 0.5)])
    assert crossing.scale == "symlog" and crossing.linthresh == 0.5
    flat = y_range([1.0], [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.2), (5, 1e18)])
    assert flat.scale == "linear" and flat.above == ((5, 1e18),) and flat.high > 1.2


def test_labels_at_one_place_are_moved_apart():
    fig, _, axes = build_figure([diverged_run()])
    ax = axes["d:metric"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    texts = [ax.text(4.0, 0.3, word, fontsize=9, transform=ax.transData) for word in
             ("first label", "second label", "third")]
    before = [t.get_window_extent(renderer) for t in texts]
    assert before[0].overlaps(before[1])
    declutter(texts, renderer)
    after = [t.get_window_extent(renderer) for t in texts]
    assert not any(after[a].overlaps(after[b]) for a in range(3) for b in range(a + 1, 3))
    assert texts[0].get_position()[0] == 4.0 < texts[1].get_position()[0] < texts[2].get_position()[0]
