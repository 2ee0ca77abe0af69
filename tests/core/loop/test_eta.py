"""The eta counts every training a run will still do (noise, confirmations, contended re-runs,
the held-out verification), from measured durations; and each of those trainings is reported
as it starts and as it ends."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from arx.core.config import RunConfig, TargetConfig
from arx.core.loop.diagnose import log_file
from arx.core.loop.driver import run_to_end
from arx.core.loop.eta import forecast
from arx.core.loop.progress import Reporter
from arx.core.loop.trace import TraceRecord, trace_events
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

from support.proposers import TRUTH, GoodThenNorm
from support.repos import edit_toml, make_script_repo

# serial: (pytest -m serial) predicted against measured seconds; not beside another test's load (README)
pytestmark = pytest.mark.serial


def rec(kind, status, iteration=0, wall=2.0, **extra):
    return TraceRecord({"kind": kind, "status": status, "iteration": iteration, "wall_s": wall,
                        "metric": 1.0, **extra})


CONFIG = RunConfig(name="t", target=TargetConfig(), iterations=10, noise="auto", verify=3, rules=5)


def test_before_any_iteration_every_kind_of_training_is_counted():
    records = [rec("baseline", "baseline", wall=4.0)]
    f = forecast(records, CONFIG, noise_left=2, verify_left=True, elapsed_s=5.0, trials_run=1,
                 trial_seconds=4.0)
    # 2 noise + 10 iterations x (1 trial + the prior's 0.3 x 2 confirmation seeds) + 2 x 3
    # held-out trainings
    assert f.trainings == pytest.approx(2 + 10 * 1.6 + 6)
    assert f.per_training_s == pytest.approx(4.0 + 1.0)  # measured wall + arx's own time
    # counting iterations only (what the eta did) would have said 10 x 5 s
    assert f.seconds == pytest.approx(24 * 5.0)


def test_measured_confirmations_and_contended_reruns_replace_the_prior():
    records = [rec("baseline", "baseline"), rec("noise", "noise", seq=1),
               rec("noise", "noise", seq=2)]
    for i in range(1, 9):
        records.append(rec("trial", "discard", i))
    records += [rec("confirm", "confirm", 3, seq=2), rec("confirm", "confirm", 3, seq=4)]
    records.append(rec("trial", "contended", 9))
    records.append(rec("trial", "keep", 9))
    f = forecast(records, CONFIG, noise_left=0, verify_left=True, elapsed_s=0.0, trials_run=0,
                 trial_seconds=0.0)
    rate = (2 + 0.6 * 2) / (9 + 2)  # 2 confirmations in 9 iterations, the prior weighs 2
    again = 1 / 14  # one contended re-run among 14 other trainings
    assert f.trainings == pytest.approx((1 * (1 + rate) + 6) * (1 + again))
    assert f.per_training_s == pytest.approx(2.0)


def test_the_verification_left_counts_down_and_none_is_left_after_it():
    done = [rec("baseline", "baseline")] + [rec("trial", "keep", i) for i in range(1, 11)]
    verifying = [*done, rec("verify", "verify", 10, seq=1), rec("verify", "verify", 10, seq=2)]
    config = replace(CONFIG, noise="off")
    f = forecast(verifying, config, noise_left=0, verify_left=True, elapsed_s=0.0,
                 trials_run=0, trial_seconds=0.0)
    assert f.trainings == pytest.approx(4)
    assert forecast(verifying, config, noise_left=0, verify_left=True, elapsed_s=0.0,
                    trials_run=0, trial_seconds=0.0, verifying=5).trainings == pytest.approx(1)
    assert forecast(verifying, config, noise_left=0, verify_left=False, elapsed_s=0.0,
                    trials_run=0, trial_seconds=0.0).trainings == 0
    assert forecast([], config, noise_left=0, verify_left=True, elapsed_s=0.0, trials_run=0,
                    trial_seconds=0.0) is None


# ---- a real run on a target whose every training sleeps the same time ----------------------

SLEEP = 0.5




class Watch(Reporter):
    def __init__(self):
        self.trials, self.trainings = [], []

    def trial(self, progress, record):
        self.trials.append((time.monotonic(), progress.eta_s, record))

    def training(self, progress, training):
        self.trainings.append((time.monotonic(), progress.eta_s, training))


def test_the_eta_after_the_baseline_is_within_a_quarter_of_the_run(tmp_path):
    root = make_script_repo(tmp_path / "p", TRUTH, locked=["NOISE_SD", "SALT", "SEED"], replace={
        "def main():\n": f"def main():\n    import time\n    time.sleep({SLEEP})\n"})
    edit_toml(root, run={"verify": 2}, target={"metric": "val_loss"},
              params={"NORM": {"choices": ["layer", "rms"]}})
    watch = Watch()
    ws = open_run(root, {"iterations": 6, "noise": "auto"}, name="eta")
    run_to_end(ws, GoodThenNorm(), watch)
    ended = time.monotonic()
    at, eta, baseline = watch.trials[0]
    assert baseline.state.value == "baseline"
    actual = ended - at
    assert abs(eta - actual) <= 0.25 * actual, (eta, actual)
    # every other training was heard as it started and as it ended, with its outcome
    kinds = [t.kind for _, _, t in watch.trainings]
    assert kinds.count("noise") == 4 and kinds.count("verify") == 8
    confirms = [t for _, _, t in watch.trainings if t.kind == "confirm"]
    assert confirms and len(confirms) % 2 == 0
    assert all(t.status == "ok" and t.metric is not None for t in confirms[1::2])
    assert {t.what for t in confirms} >= {"candidate"}
    # every noise training keeps its log (0000-noise.log kept the last one only), and a
    # record finds its own
    logs = {p.name for p in ws.log_dir.iterdir()}
    assert {"0000-noise-1.log", "0000-noise-2.log", "0006-verify-0-1.log"} <= logs
    events = trace_events(GitRepo(root), "eta")
    noise2 = next(e for e in events if e.get("kind") == "noise" and e.get("seq") == 2)
    assert log_file(ws.log_dir, noise2).name == "0000-noise-2.log"
    confirm = next(e for e in events if e.get("kind") == "confirm" and e.get("event") == "trial")
    assert log_file(ws.log_dir, confirm).name == f"0001-confirm-{confirm['of']}-s{confirm['seed']}.log"
