"""Replay compares the trial fields arx wrote later (issue #24): a changed one is a divergence,
and a record made before the field existed is not compared on it (old branches replay)."""

from __future__ import annotations

import pytest

from arx.core.replay.compare import NEWER_TRIAL_FIELDS, field_difference

TRIAL = {"event": "trial", "iteration": 4, "kind": "trial", "status": "discard", "metric": 1.2,
         "changes": {"LR": 0.01}, "curve": [[10, 2.0], [20, 1.5], [30, 1.2]],
         "curve_unit": "step", "confirm_seeds": [1, 2], "best_first_metric": 1.1,
         "confirm_failed": ["confirm_timeout: candidate, seed 2 (timed out after 90 s)"],
         "dropped": 2, "overruled": True}
PRUNED = {**TRIAL, "status": "pruned", "pruned_at": [20, 1.5]}


@pytest.mark.parametrize("name, changed", [
    ("pruned_at", [30, 1.2]), ("curve_unit", "s"), ("confirm_seeds", [1, 3]),
    ("best_first_metric", 1.3), ("confirm_failed", []), ("dropped", 1), ("overruled", None),
])
def test_a_changed_newer_field_is_a_divergence(name, changed):
    original = PRUNED
    replayed = {**original, name: changed}
    assert field_difference(original, original) is None
    assert field_difference(original, replayed) == (name, original[name], changed)


def test_the_curve_is_compared_by_its_number_of_points():
    fewer = {**TRIAL, "curve": TRIAL["curve"][:2]}
    assert field_difference(TRIAL, fewer) == ("curve_points", 3, 2)
    # the values are the run's measurement, served back by the replay: not compared
    assert field_difference(TRIAL, {**TRIAL, "curve": [[10, 9.0], [20, 9.0], [30, 9.0]]}) is None


def test_a_record_made_before_a_field_existed_is_not_compared_on_it():
    old = {k: v for k, v in TRIAL.items() if k not in NEWER_TRIAL_FIELDS and k != "curve"}
    assert field_difference(old, TRIAL) is None
    # ... but the fields compared before stay compared
    assert field_difference(old, {**TRIAL, "status": "keep"}) == ("status", "discard", "keep")
