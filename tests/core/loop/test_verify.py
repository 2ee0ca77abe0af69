"""Held-out verification and the honest spread: the statistics, and real runs on a target with a
known truth (tests/support/truth_train.py), whose every number the test computes itself."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import signal
import statistics
import subprocess
import sys
import time

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.loop import noise, stats, verify
from arx.core.loop.driver import run_to_end
from arx.core.loop.trace import trace_events
from arx.core.proposers.base import Proposal
from arx.core.replay.run import replay
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

from support.proposers import GOOD, TRUTH, GoodThenNorm
from support.repos import edit_toml, make_script_repo


def truth_module():
    spec = importlib.util.spec_from_file_location("truth_train_t", TRUTH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def printed(truth, config, seed, salt=0):
    """What truth_train.py prints for ``config`` on ``seed``, computed here, not by arx."""
    c = {**{n: getattr(truth, n) for n in truth.TUNED}, **config}
    key = f"{salt}|{seed}|" + "|".join(f"{k}={c[k]!r}" for k in truth.TUNED)
    return float(f"{truth.truth(c) + random.Random(key).gauss(0.0, truth.NOISE_SD):.6f}")


# ---- the statistics ----------------------------------------------------------------------------

def test_chi2_quantiles_match_closed_forms_and_the_upper_bound_shrinks_with_evidence():
    for p in (0.05, 0.2, 0.5, 0.95):  # df 2 is the exponential: -2 ln(1 - p)
        assert stats.chi2_quantile(p, 2) == pytest.approx(-2 * math.log(1 - p), rel=1e-9)
    assert stats.chi2_quantile(0.95, 1) == pytest.approx(1.959964 ** 2, rel=1e-5)
    factors = [stats.upper_factor(df, 0.8) for df in (1, 2, 5, 20, 200)]
    assert factors == sorted(factors, reverse=True) and factors[-1] < 1.1 < 2 < factors[1]
    # the bound holds: for normal samples of 3, the true sd is below it ~80% of the time
    rng = random.Random(7)
    held = sum(stats.sd_upper(statistics.stdev([rng.gauss(0, 1) for _ in range(3)]), 2, 0.8)
               >= 1.0 for _ in range(4000))
    assert 0.77 < held / 4000 < 0.83


def test_pooled_spread_counts_only_groups_of_two_or_more():
    sd, df = stats.pooled([[1.0, 3.0], [5.0], [2.0, 2.0, 2.0], [None, 4.0]])
    assert df == 3 and sd == pytest.approx(math.sqrt(2.0 / 3))
    assert stats.pooled([[1.0]]) == (0.0, 0)


@pytest.mark.parametrize("texts,values,expected", [
    (["0.9600", "0.9711", "0.9500"], [0.96, 0.9711, 0.95], 1e-4),
    (["1.520000", "1.520000"], [1.52, 1.52], 1e-6),
    (["0.96", "0.97", "0.95"], [0.96, 0.97, 0.95], 1e-2),
    ([], [873 / 899, 870 / 899, 875 / 899], 1 / 899),  # an accuracy on 899 samples, in full
    ([], [0.123456789, 0.2345678912, 0.3456789123], 1e-10),
    (["2.3e-05", "2.1e-05"], [2.3e-5, 2.1e-5], 1e-6),
])
def test_the_resolution_of_a_metric_is_its_last_printed_digit_or_its_sample_lattice(
        texts, values, expected):
    assert noise.resolution(values, texts) == pytest.approx(expected)


def test_an_inert_seed_and_a_coarse_metric_are_said_and_floor_the_spread():
    event = noise.noise_event("r", "seeds", [0.9611, 0.9611, 0.9611], rules=5,
                              texts=["0.9611"] * 3)
    assert event["inert"] and event["sd"] == 0 and noise.coarse(event)
    said = " ".join(noise.warnings(event))
    assert "changing the seed constant changed nothing" in said and "one fixed split" in said
    assert noise.spread(event, [], rules=5)["sd"] == pytest.approx(1e-4)
    assert noise.spread(event, [], rules=4)["sd"] is None  # older runs decide as they did
    fine = noise.noise_event("r", "repeats", [1.52] * 3, rules=5, texts=["1.520000"] * 3)
    assert not fine["inert"] and not noise.coarse(fine) and noise.warnings(fine) == []
    assert noise.spread(fine, [], rules=5)["sd"] is None  # it repeats itself: no noise at all
    measured = noise.noise_event("r", "seeds", [1.0, 1.02, 0.99], rules=5)
    upper = noise.spread(measured, [], rules=5)
    assert upper["sd"] == pytest.approx(stats.sd_upper(measured["sd"], 2))
    assert upper["sample_sd"] == pytest.approx(measured["sd"])
    assert noise.spread(measured, [], rules=4)["sd"] == pytest.approx(measured["sd"])


def test_held_out_seeds_lie_above_every_seed_the_run_used_and_repeat_without_one():
    records = [{"seed": 42}, {"seed": 43, "config": {"SEED": 43}}, {"config": {"SEED": 50}},
               {"seed": None}, {"seed": True}]
    assert verify.heldout_seeds(records, 3, "SEED") == [51, 52, 53]
    assert verify.heldout_seeds(records, 2, None) == [None, None]


@pytest.mark.parametrize("direction,base,best,confirmed", [
    ("min", [1.00, 1.01, 0.99], [0.90, 0.91, 0.89], True),
    ("min", [1.00, 1.01, 0.99], [0.99, 1.01, 1.00], False),
    ("max", [0.90, 0.91, 0.89], [0.95, 0.96, 0.94], True),
    ("max", [0.90, 0.91, 0.89], [0.85, 0.86, 0.84], False),
])
def test_a_held_out_delta_is_confirmed_only_beyond_two_standard_errors(direction, base, best,
                                                                        confirmed):
    v = verify.summarize([7, 8, 9], base, best, [[1.0, 1.0]], -0.2, direction, 3)
    assert v.delta == pytest.approx(statistics.fmean(best) - statistics.fmean(base))
    sd, _ = stats.pooled([base, best, [1.0, 1.0]])
    assert v.se == pytest.approx(sd * math.sqrt(2 / 3))
    assert v.confirmed is confirmed
    assert (verify.NOT_CONFIRMED in v.describe()) is not confirmed
    assert verify.Verified.from_event(v.event("r", 5)) == v
    # one step of a coarse metric is the least a confirmed gain must be
    coarse = verify.summarize([1, 2], [0.96, 0.96], [0.965, 0.965], [], 0.0, "max", 1,
                              resolution=0.01)
    assert coarse.se == 0 and not coarse.confirmed


# ---- real runs on the truth target -------------------------------------------------------------





def truth_repo(path):
    root = make_script_repo(path, TRUTH, locked=["NOISE_SD", "SALT", "SEED"])
    edit_toml(root, run={"verify": 3}, target={"metric": "val_loss"},
              params={"NORM": {"choices": ["layer", "rms"]}})
    return root


def sure_keep_repo(path, slow_heldout=False):
    """The truth target where any LR the offline proposer draws (0.002-0.01, the only thing it
    may change) is far better than the baseline's 1.0 (worth 0.9): a sure keep for `arx run`."""
    root = truth_repo(path)
    text = (root / "train.py").read_text().replace("LR = 0.02", "LR = 1.0")
    if slow_heldout:  # the held-out trainings take 0.2 s (to be killed in)
        text = text.replace("def main():\n", "def main():\n    import time\n"
                            "    time.sleep(0.2 if SEED >= 3 else 0)\n")
    (root / "train.py").write_text(text)
    git.Repo(root).git.commit("-qam", "a bad LR")
    edit_toml(root, params={"LR": {"low": 0.002, "high": 0.01}},
              locked=["NOISE_SD", "SALT", "SEED", "WIDTH", "DROPOUT", "WARMUP", "ACTIVATION",
                      "NORM"])
    return root


def test_a_run_ends_with_a_held_out_verification_on_unused_seeds(tmp_path):
    truth = truth_module()
    root = truth_repo(tmp_path / "p")
    ws = open_run(root, {"iterations": 2}, name="v")
    engine = run_to_end(ws, GoodThenNorm())
    events = trace_events(GitRepo(root), "v")
    trials = [e for e in events if e.get("event") == "trial"]
    used = {e.get("seed") for e in trials if e["kind"] != "verify"} - {None}
    assert used == {0, 1, 2}  # the baseline, the noise seeds (and the confirmations on them)
    keep = next(e for e in trials if e["status"] == "keep")
    assert keep["changes"] == GOOD
    (event,) = [e for e in events if e.get("event") == "verify"]
    assert event["seeds"] == [3, 4, 5] and event["best_iteration"] == 1
    # the test computes what each side prints on each held-out seed; arx measured exactly that
    assert event["baseline_metrics"] == [printed(truth, {}, s) for s in (3, 4, 5)]
    assert event["best_metrics"] == [printed(truth, GOOD, s) for s in (3, 4, 5)]
    delta = statistics.fmean(event["best_metrics"]) - statistics.fmean(event["baseline_metrics"])
    assert event["delta"] == pytest.approx(delta)
    verify_trials = [e for e in trials if e["kind"] == "verify"]
    assert [(e["of"], e["seed"]) for e in verify_trials] == [(0, 3), (1, 3), (0, 4), (1, 4),
                                                              (0, 5), (1, 5)]
    base, best = noise.reported(trials, noise.latest_noise(events))
    assert event["in_search_delta"] == pytest.approx(best - base)
    # the end commit states it: the trailer first gives the held-out delta, then its error
    end = GitRepo(root).log("arx/v", max_count=1)[0]
    trailer = end.trailers["Arx-Verified"]
    assert trailer.startswith(f"{event['delta']:+.6f} +- {event['se']:.6f} over 3 held-out "
                              f"seeds (in search {event['in_search_delta']:+.6f})")
    assert ("not confirmed on held-out seeds" in trailer) is not event["confirmed"]
    assert "in search; held-out" in end.subject
    assert engine.verified is not None
    assert engine.progress().verified.startswith(f"{event['delta']:+.6f} +- ")
    # the worktree's target was the best's again before the end commit
    assert "LR = 0.004" in git.Repo(root).git.show("arx/v:train.py")


def test_verification_off_and_nothing_kept_write_no_verification(tmp_path):
    root = truth_repo(tmp_path / "p")
    ws = open_run(root, {"iterations": 1, "verify": 0}, name="off")
    run_to_end(ws, GoodThenNorm())
    assert not [e for e in trace_events(GitRepo(root), "off") if e.get("event") == "verify"]
    assert "Arx-Verified" not in GitRepo(root).log("arx/off", max_count=1)[0].trailers

    class Nothing(GoodThenNorm):
        def propose(self, request, feedback=None):
            return [Proposal(changes={"NORM": "rms"}, hypothesis="-", source=self.name)]

    ws = open_run(root, {"iterations": 1}, name="none")
    run_to_end(ws, Nothing())
    assert not [e for e in trace_events(GitRepo(root), "none") if e.get("event") == "verify"]
    assert "Arx-Verified" not in GitRepo(root).log("arx/none", max_count=1)[0].trailers


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_a_verification_killed_midway_resumes_without_training_twice_and_replays(tmp_path):
    root = sure_keep_repo(tmp_path / "p", slow_heldout=True)
    arx = [sys.executable, "-m", "arx.cli.main", "-C", str(root)]
    proc = subprocess.Popen([*arx, "run", "--json", "--name", "k", "--iterations", "1",
                             "--seed", "3"], stdout=subprocess.PIPE, text=True)
    notes = 0
    for line in proc.stdout:
        obj = json.loads(line)
        if obj.get("event") == "training" and obj["kind"] == "verify" \
                and obj["phase"] == "start":
            notes += 1
            if notes == 3:  # the third held-out training is starting (it sleeps 0.2 s)
                break
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = subprocess.run([*arx, "run", "--resume", "k", "--quiet"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events = trace_events(GitRepo(root), "k")
    verify_recs = [e for e in events if e.get("event") == "trial" and e["kind"] == "verify"]
    finished = [(e["seq"], e["seed"]) for e in verify_recs if e["status"] == "verify"]
    assert sorted(finished) == [(1, 3), (2, 3), (3, 4), (4, 4), (5, 5), (6, 5)]
    assert [e["seq"] for e in verify_recs if e["status"] == "interrupted"] == [3]
    assert len([e for e in events if e.get("event") == "verify"]) == 1
    report = replay(root, "arx/k")
    assert report.reproduced, report.render()


def test_arx_verify_on_demand_adds_new_seeds_a_commit_and_replays(tmp_path):
    truth = truth_module()
    root = sure_keep_repo(tmp_path / "p")
    out = CliRunner().invoke(cli, ["-C", str(root), "run", "--name", "d", "--iterations", "1",
                                   "--verify", "0", "--quiet"])
    assert out.exit_code == 0, out.output
    keep = next(e for e in trace_events(GitRepo(root), "d") if e.get("status") == "keep")
    out = CliRunner().invoke(cli, ["-C", str(root), "verify", "d", "--seeds", "2"])
    assert out.exit_code == 0, out.output
    events = trace_events(GitRepo(root), "d")
    (event,) = [e for e in events if e.get("event") == "verify"]
    assert event["on_demand"] and event["seeds"] == [3, 4] and event["at"]["trace_lines"] > 0
    assert event["best_metrics"] == [printed(truth, keep["changes"], s) for s in (3, 4)]
    assert event["baseline_metrics"] == [printed(truth, {"LR": 1.0}, s) for s in (3, 4)]
    tip = GitRepo(root).log("arx/d", max_count=1)[0]
    assert tip.subject.startswith("verify d: held-out val_loss")
    assert tip.trailers["Arx-Level"] == "verify" and tip.trailers["Arx-Verified"].startswith(
        f"{event['delta']:+.6f} +- {event['se']:.6f} over 2 held-out seeds")
    status = CliRunner().invoke(cli, ["-C", str(root), "status", "d", "--json"])
    assert json.loads(status.output)[0]["state"] == "finished"
    assert json.loads(status.output)[0]["verified"]["delta"] == pytest.approx(event["delta"])
    # a second verification takes seeds above the first's and numbers its trials after them
    out = CliRunner().invoke(cli, ["-C", str(root), "verify", "arx/d", "--seeds", "1"])
    assert out.exit_code == 0, out.output
    second = [e for e in trace_events(GitRepo(root), "d") if e.get("event") == "verify"][-1]
    assert second["seeds"] == [5]
    report = replay(root, "arx/d")
    assert report.reproduced, report.render()
    assert report.acts[-1].startswith("verify on 1 held-out seeds")


def test_a_steps_mode_verification_retrains_identically(tmp_path):
    root = sure_keep_repo(tmp_path / "p")
    out = CliRunner().invoke(cli, ["-C", str(root), "run", "--name", "s", "--iterations", "1",
                                   "--steps", "5", "--verify", "2", "--quiet"])
    assert out.exit_code == 0, out.output
    report = replay(root, "arx/s", retrain=True)
    assert report.reproduced, report.render()
    rows = [r for r in report.retrain.rows if r.kind == "verify"]
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert all(r.retrained == r.recorded for r in rows)


def test_one_value_a_side_and_no_other_repeats_is_an_unknown_error_never_a_confirmation():
    v = verify.summarize([5], [1.0], [0.5], [], -0.5, "min", 1)
    assert v.se is None and not v.confirmed
    assert v.describe() == ("held-out delta -0.500000 +- n/a over 1 held-out seeds (in search "
                            "-0.500000): not confirmed on held-out seeds")
