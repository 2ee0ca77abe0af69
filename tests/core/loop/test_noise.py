"""Decisions under noise: the spread is measured before anything is decided, a keep must beat it.

The target (tests/support/noisy_train.py) draws its noise from a counter beside it, so a test's
sequence of measurements is fixed, and no constant but GOOD moves the metric. The proposer is
the real offline one, or a scripted one (the boundary: a proposer is a contract) where a test
needs a given change at a given iteration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import git
import pytest

from arx.core.analysis.report import write_report
from arx.core.app.runs import run_status
from arx.core.app.scaffold import init_repo
from arx.core.errors import ConfigError
from arx.core.loop import noise
from arx.core.loop.engine import Engine
from arx.core.loop.progress import Reporter
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run
from arx.core.states import TrialState

from support.proposers import Scripted
from support.repos import edit_toml, git_repo, make_script_repo

NOISY = Path(__file__).parents[2] / "support" / "noisy_train.py"
LOCKED = ["NOISE_SD", "EFFECT", "SALT", "GOOD"]




def noisy(tmp_path, salt, locked=LOCKED):
    return make_script_repo(tmp_path / f"p{salt}", NOISY, locked=locked,
                            replace={"SALT = 0": f"SALT = {salt}"})


def run(root, proposer, name="n", **flags):
    ws = open_run(root, {"iterations": 20, **flags}, name=name)
    engine = Engine(ws, proposer)
    try:
        engine.run()
    finally:
        ws.close(remove_worktree=True)
    return engine


def events(root, run_name, event):
    text = git.Repo(root).git.show(f"arx/{run_name}:runs/{run_name}/trace.jsonl")
    return [e for e in map(json.loads, text.splitlines()) if e.get("event") == event]


def keeps(engine):
    return [r for r in engine.records if r.state is TrialState.KEEP]


@pytest.mark.parametrize("salt", [1, 2, 3])
def test_a_target_of_pure_noise_keeps_at_most_one_change_in_20_iterations(tmp_path, salt):
    root = noisy(tmp_path, salt)
    engine = run(root, OptunaProposer(seed=salt))
    noise = events(root, "n", "noise")
    assert len(noise) == 1 and noise[0]["method"] == "seeds" and noise[0]["n"] == 3
    assert 0.002 < noise[0]["sd"] < 0.03  # the target's sd is 0.01
    trials = [r for r in engine.records if r.kind == "trial"]
    assert len(trials) == 20 and len(keeps(engine)) <= 1


def test_without_the_noise_measurement_the_same_target_keeps_noise(tmp_path):
    """The contrast that makes the default matter: strictly-better acceptance keeps luck."""
    root = noisy(tmp_path, 1)
    off = run(root, OptunaProposer(seed=1), name="off", noise="off")
    assert events(root, "off", "noise") == []
    auto = run(root, OptunaProposer(seed=1), name="auto")
    assert len(keeps(off)) >= 2 and len(keeps(off)) > len(keeps(auto))


def test_a_real_effect_of_five_times_the_noise_is_kept_with_its_margin(tmp_path):
    root = noisy(tmp_path, 4, locked=["NOISE_SD", "EFFECT", "SALT"])
    script = [{"A": 0.6}, {"B": 16}, {"GOOD": 1}, {"C": 0.02}, {"A": 0.4}, {"B": 4}]
    engine = run(root, Scripted(script), iterations=6)
    kept = keeps(engine)
    assert [r.changes for r in kept] == [{"GOOD": 1}]
    assert kept[0].get("margin_sd") > 2.0 and kept[0].get("reference") is not None
    keep_commit = next(c for c in GitRepo(root).log("arx/n") if c.trailers.get("Arx-Status"))
    assert float(keep_commit.trailers["Arx-Margin"]) == pytest.approx(kept[0].get("margin_sd"),
                                                                      abs=0.01)
    # the best is now the mean of what the keep measured, and the later no-effect trials lose
    later = [r for r in engine.records if r.kind == "trial" and r.iteration > 3]
    assert all(r.state is TrialState.DISCARD for r in later)
    # the run's summary and `arx status` report the same means: the baseline's over its noise
    # measurements, the best's over its confirmations
    noise = events(root, "n", "noise")[0]
    shown = engine.progress()
    status = run_status(GitRepo(root), "n")
    assert shown.baseline_metric == status.baseline == pytest.approx(noise["mean"])
    assert shown.best_metric == status.best == pytest.approx(kept[0].get("reference"))


def test_a_given_spread_is_recorded_and_costs_no_trial(tmp_path):
    root = noisy(tmp_path, 5)
    engine = run(root, OptunaProposer(seed=5), iterations=2, noise="0.02")
    (event,) = events(root, "n", "noise")
    assert event["method"] == "given" and event["sd"] == 0.02 and event["n"] == 0
    assert not [r for r in engine.records if r.kind == "noise"]
    status = run_status(GitRepo(root), "n")
    assert status.noise_sd == 0.02


def test_noise_must_be_off_auto_or_a_positive_number(tmp_path):
    root = noisy(tmp_path, 6)
    with pytest.raises(ConfigError, match="--noise must be off, auto or a positive number"):
        open_run(root, {"noise": "-1"}, name="bad")


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_a_run_killed_while_measuring_noise_finishes_the_measurement_on_resume(tmp_path):
    """The measurement's trials already recorded are kept; the rest run on resume."""
    root = noisy(tmp_path, 7)
    ws = open_run(root, {"iterations": 1}, name="k")
    engine = Engine(ws, OptunaProposer(seed=7))
    original = engine.trials.run
    calls = []

    def dying(request):
        calls.append(request.key.kind)
        if request.key.kind == "noise" and request.key.seq == 2:
            raise KeyboardInterrupt  # arx killed while the second noise trial runs
        return original(request)

    engine.trials.run = dying
    with pytest.raises(KeyboardInterrupt):
        engine.run()
    ws.close(remove_worktree=False)
    assert calls == ["baseline", "noise", "noise"]
    resumed = open_run(root, {}, resume="k")
    engine = Engine(resumed, OptunaProposer(seed=7))
    try:
        engine.run()
    finally:
        resumed.close(remove_worktree=True)
    records = [json.loads(line) for line in git.Repo(root).git.show(
        "arx/k:runs/k/trace.jsonl").splitlines()]
    noise_trials = [(r["seq"], r["status"]) for r in records
                    if r.get("event") == "trial" and r.get("kind") == "noise"]
    assert noise_trials == [(1, "noise"), (2, "interrupted"), (2, "noise")]
    (event,) = [r for r in records if r.get("event") == "noise"]
    assert event["n"] == 3


def test_the_report_shows_the_noise_band_and_each_keeps_margin(tmp_path):
    root = noisy(tmp_path, 8, locked=["NOISE_SD", "EFFECT", "SALT"])
    run(root, Scripted([{"GOOD": 1}, {"A": 0.7}]), iterations=2)
    report = write_report(root, ["n"], tmp_path / "r.png")
    labels = [c.get_label() for c in report.axes["n:metric"].collections]
    assert any(label.startswith("noise (best ± sd") for label in labels)
    assert "confirmed on more seeds" in labels  # the keep won on more seeds first
    summary = (tmp_path / "r.md").read_text()
    assert "Noise: val_bpb sd" in summary and "over 3 baseline runs (seeds)" in summary
    assert "| margin (sd) |" in summary


def test_the_best_is_measured_again_after_contention_once():
    """A contended trial calls for re-measuring the best before the next iteration; a contended
    re-measurement, once it is measured again, does not call for another."""
    from arx.core.loop.noise import drifted
    from arx.core.loop.trace import TraceRecord

    def rec(i, kind, status):
        return TraceRecord({"iteration": i, "kind": kind, "status": status})

    trial = [rec(3, "trial", "contended"), rec(3, "trial", "discard")]
    assert drifted(trial, 4) and not drifted(trial, 3)
    after = trial + [rec(4, "rebaseline", "contended"), rec(4, "rebaseline", "rebaseline"),
                     rec(4, "trial", "discard")]
    assert not drifted(after, 5)
    again = after + [rec(5, "trial", "contended"), rec(5, "trial", "keep")]
    assert drifted(again, 6)


COARSE = '''"""A scikit-learn-docs-like script: the seed reaches nothing, the accuracy has 2 decimals."""
import math

SEED = 0  # random_state the estimator ignores
MAX_ITER = 100
C = 1.0
UNUSED = 1


def main():
    loss = 1.0 / MAX_ITER + abs(math.log10(C))
    print(f"iter {MAX_ITER} train loss: {loss:.6f}")
    print("---")
    print(f"accuracy: {0.96 - 0.01 * round(abs(math.log10(C))):.2f}")


main()
'''


def test_an_inert_seed_and_a_coarse_metric_are_said_and_never_stop_a_run(tmp_path):
    root = tmp_path / "p"
    repo = git_repo(root)
    (root / "train.py").write_text(COARSE)
    repo.index.add(["train.py"])
    repo.index.commit("mine")
    init_repo(root, target_file="train.py", command=f"{sys.executable} train.py",
              metric="accuracy")
    edit_toml(root, params={"MAX_ITER": {"low": 50, "high": 400},
                            "UNUSED": {"low": 1, "high": 9}})
    lines = []

    class Lines(Reporter):
        def line(self, text):
            lines.append(text)

    ws = open_run(root, {"iterations": 5}, name="c")
    script = [{"MAX_ITER": 110}, {"MAX_ITER": 120}, {"UNUSED": 2}, {"UNUSED": 3},
              {"UNUSED": 4}]
    Engine(ws, Scripted(script), reporter=Lines()).run()  # no stop for no_effect
    ws.close(remove_worktree=True)
    text = git.Repo(root).git.show("arx/c:runs/c/trace.jsonl")
    events = [json.loads(line) for line in text.splitlines()]
    noise = next(e for e in events if e.get("event") == "noise")
    assert noise["inert"] and noise["sd"] == 0 and noise["resolution"] == pytest.approx(0.01)
    said = "\n".join(lines)
    assert "changing the seed constant changed nothing (3 seeds measured exactly 0.96)" in said
    assert "one fixed split and initialisation" in said
    states = [e["status"] for e in events if e.get("event") == "trial" and e["kind"] == "trial"]
    # the losses moved, the 2-decimal accuracy did not: the change reached the training
    assert states[:2] == ["discard", "discard"]
    # UNUSED reaches nothing at all (every printed line the same): no_effect, yet a coarse
    # metric never stops the run for it
    assert states[2:] == ["no_effect"] * 3
    assert run_status(GitRepo(root), "c").state == "finished"


def test_from_rules_8_a_measurement_too_short_to_sample_is_not_judged_for_contention():
    """Trials of 0.16 s on a quiet machine read "the trial got 0.00 cores, others 1.7" (its
    tree ended between two samples) and paused a run: from rules 8 they are not judged, and
    short baseline measurements do not make the reference."""
    starved = {"cpu_share": 0.0, "others_cpu": 1.7}
    short = [{"kind": "baseline", "wall_s": 0.16, "machine": {"cpu_share": 1.33,
                                                              "others_cpu": 0.08}}]
    reference = noise.reference_usage(short)  # rules 1-7: the short baseline is the reference
    assert noise.contended(starved, reference)
    assert noise.measurable(0.16, 7) and not noise.measurable(0.16, 8)
    assert noise.measurable(0.6, 8)
    assert noise.reference_usage(short, 8) is None  # nothing to judge against
    long = [*short, {"kind": "noise", "wall_s": 0.9, "machine": {"cpu_share": 0.95,
                                                                 "others_cpu": 0.1}}]
    assert noise.reference_usage(long, 8) == {"cpu_share": 0.95, "others_cpu": 0.1}
