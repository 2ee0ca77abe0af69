"""Learning curves read from a trial's output, and a watch that stops the trial early."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from arx.core.execution.curve import MAX_POINTS, SECONDS, STEP, CurveReader, value_at
from arx.core.execution.trial import ExecStatus, TrialSpec, _Scanner, run_trial

CURVE = Path(__file__).parents[2] / "support" / "curve_train.py"


def scan(lines, **kw) -> _Scanner:
    scanner = _Scanner("val_bpb", None, **kw)
    for line in lines:
        scanner.feed(line)
    return scanner


def test_points_take_the_step_named_before_them_and_leave_out_the_summary():
    s = scan(["step 10 | loss 3", "val_bpb: 2.0", "iter: 20", "val_bpb: 1.5", "---",
              "val_bpb: 1.4", "num_steps: 30"])
    assert s.points(ok=True) == ((10.0, 2.0), (20.0, 1.5))
    assert s.curve.unit == STEP and s.outcome()[0] == 1.4


def test_without_a_summary_the_last_metric_line_is_the_metric_not_a_point():
    s = scan(["step 1", "val_bpb: 2.0", "step 2", "val_bpb: 1.5", "step 3", "val_bpb: 1.2"])
    assert s.points(ok=True) == ((1.0, 2.0), (2.0, 1.5))
    assert s.points(ok=False) == ((1.0, 2.0), (2.0, 1.5), (3.0, 1.2))  # a pruned trial keeps all


def test_without_step_lines_progress_is_elapsed_seconds():
    ticks = iter([0.0, 1.5, 3.0])
    reader = CurveReader(clock=lambda: next(ticks))
    reader.point(2.0)
    reader.point(1.0)
    assert reader.unit == SECONDS and reader.points == [(1.5, 2.0), (3.0, 1.0)]


def test_a_custom_progress_regex_and_non_numbers_skipped():
    s = scan(["epoch 3/10", "val_bpb: nan", "val_bpb: 2.5", "---", "val_bpb: 2"],
             progress_regex=r"epoch (\d+)/")
    assert s.points(ok=True) == ((3.0, 2.5),)


def test_a_long_curve_is_thinned_to_the_same_points_whatever_its_length():
    reader = CurveReader()
    kept = []
    for k in range(10 * MAX_POINTS + 3):
        reader.step_line(f"step {k}")
        if reader.point(float(k)):
            kept.append(k)
    assert len(reader.points) <= MAX_POINTS
    stride = reader.stride
    assert stride == 16
    assert [int(p) for p, _ in reader.points] == list(range(0, 10 * MAX_POINTS + 3, stride))
    assert set(int(p) for p, _ in reader.points) <= set(kept)


def test_value_at_interpolates_inside_the_curve_only():
    curve = [(10.0, 2.0), (20.0, 1.0)]
    assert value_at(curve, 15.0) == 1.5 and value_at(curve, 10.0) == 2.0
    assert value_at(curve, 5.0) is None and value_at(curve, 25.0) is None


def test_reading_a_point_costs_well_under_a_millisecond():
    lines = [f"step {k:05d} | loss 2.5 | dt 120ms" if k % 2 else f"val_bpb: {1 + 1 / (k + 1):.6f}"
             for k in range(20000)]
    scanner = _Scanner("val_bpb", None)
    t0 = time.perf_counter()
    for line in lines:
        scanner.feed(line)
    per_point = (time.perf_counter() - t0) / 10000
    assert per_point < 1e-3, per_point


def test_a_watch_stops_the_trial_and_keeps_its_curve(tmp_path):
    seen = []

    def watch(curve: CurveReader) -> bool:
        seen.append(len(curve.points))
        return len(curve.points) >= 3

    command = f"{sys.executable} {CURVE}"
    full = run_trial(TrialSpec(command=command, cwd=tmp_path, timeout_s=20, metric="val_bpb"))
    assert full.status is ExecStatus.OK and len(full.curve) == 8 and full.curve_unit == STEP
    assert full.curve[0][0] == 12.0 and full.metric == 1.0
    pruned = run_trial(TrialSpec(command=command, cwd=tmp_path, timeout_s=20, metric="val_bpb"),
                       watch=watch)
    assert pruned.status is ExecStatus.PRUNED and pruned.metric is None
    assert pruned.curve == full.curve[:3] and seen == [1, 2, 3]
    assert "pruned at step 36" in pruned.reason
    assert pruned.wall_s < full.wall_s
