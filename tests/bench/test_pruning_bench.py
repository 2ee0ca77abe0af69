"""The pruning bench's replay of the runner template's rule on recorded prune-off curves
(bench/pruning.py ``counterfactual``): what it would stop, the keeps it would lose, the
training it would save, and the bound no keep-safe rule can beat on the same curves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from arx.core.loop.trace import TraceRecord

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import pruning  # noqa: E402

STEPS = range(25, 400, 25)  # a point every 25 of 400 steps, as the suite's mlp prints


def rec(iteration, kind, status, offset, metric, best_before=None, wall=10.0):
    return TraceRecord({
        "iteration": iteration, "kind": kind, "status": status, "metric": metric,
        "best_before": best_before, "wall_s": wall, "curve_unit": "step", "curve_end": 400.0,
        "curve": [[float(s), offset - s / 400] for s in STEPS]})


def test_the_replay_counts_what_the_rule_stops_and_bounds_what_any_safe_rule_could_save():
    records = [
        rec(0, "baseline", "baseline", 2.0, 1.0),
        # 1.0 behind the best's curve everywhere: stopped at its 3rd point past 15% of the
        # budget (steps 75, 100, 125), so 1 - 125/400 of its 10 s are saved; the bound stops it
        # at its first point past 15% (step 75)
        rec(1, "trial", "discard", 3.0, 2.0, best_before=1.0),
        # ahead of the best everywhere: never stopped, and outside the bound (it is a keep)
        rec(2, "trial", "keep", 1.5, 0.5, best_before=1.0),
    ]
    session = pruning.Session("off", 0, 30.0, records, -0.5)
    n, pruned, lost, saved, bound = pruning.counterfactual([session])
    assert (n, pruned, lost) == (2, 1, 0)
    assert saved == pytest.approx(10 * (1 - 125 / 400) / 20)
    assert bound == pytest.approx(10 * (1 - 75 / 400) / 20)


def test_a_trial_that_would_beat_a_best_whose_result_jumped_above_its_curve_is_not_stopped():
    """The best's last measurement (1.6) came out far above its curve (0.9 at step 375): a trial
    whose curve trails the best's by 0.3 ends at 1.2, beating it. The rule sees the best's
    result and waits; a rule blind to it would have lost that keep."""
    records = [rec(0, "baseline", "baseline", 1.8, 1.6),
               rec(1, "trial", "keep", 2.1, 1.2, best_before=1.6)]
    n, pruned, lost, saved, bound = pruning.counterfactual(
        [pruning.Session("off", 0, 20.0, records, -0.4)])
    assert (n, pruned, lost, saved, bound) == (1, 0, 0, 0.0, 0.0)


def test_a_variant_rule_is_replayed_on_the_same_curves_as_the_template():
    """``judge``: another runner's rule on the same recorded curves (how rules are compared)."""
    records = [rec(0, "baseline", "baseline", 2.0, 1.0),
               rec(1, "trial", "discard", 3.0, 2.0, best_before=1.0)]
    session = pruning.Session("off", 0, 30.0, records, -0.5)
    eager = pruning.template_runner()({"direction": "min"})
    eager.prune_patience = 1  # stops at its first point past 15% (step 75), not its third
    _, pruned, _, saved, _ = pruning.counterfactual([session], eager)
    assert pruned == 1 and saved == pytest.approx(1 - 75 / 400)
    assert pruning.counterfactual([session])[3] == pytest.approx(1 - 125 / 400)


def test_sessions_written_in_parts_are_reported_as_one(tmp_path):
    """A bench run in parts (``--modes``, ``--first-seed``, separate work dirs) reads back as one
    table: each session's records, seconds and check, by problem and mode, in seed order."""
    records = [rec(0, "baseline", "baseline", 2.0, 1.0),
               rec(1, "trial", "pruned", 3.0, None, best_before=1.0),
               rec(2, "trial", "keep", 1.5, 0.5, best_before=1.0)]
    on = pruning.Session("on", 3, 60.0, records, -0.5, [(0.8, 1.0)])
    off = pruning.Session("off", 1, 30.0, records[:1] + records[2:], -0.5)
    on.dump(tmp_path / "a" / "sessions" / "mlp" / "on-3.json", 1.5)
    off.dump(tmp_path / "b" / "sessions" / "mlp" / "off-1.json", 0.5)
    results, loads = pruning.from_dumps([tmp_path / "a", tmp_path / "b"])
    (back_on,), (back_off,) = results["mlp"]["on"], results["mlp"]["off"]
    assert (back_on.seed, back_on.per_hour, back_on.lost, len(back_on.pruned)) == (3, 120.0, 1, 1)
    assert (back_off.seed, back_off.per_hour, back_off.best_delta) == (1, 120.0, -0.5)
    assert sorted(loads) == [0.5, 1.5]
    table = pruning.report(results, 60.0, check=True)
    assert "| mlp | on | 1 | 120 ± 0 |" in table and "1 of 1" in table
