"""False keeps under noise, and what the noise measurement costs.

Runs real arx runs (offline Optuna proposer, default settings) on tests/support/noisy_train.py,
a target whose metric is noise (sd 0.01) around a constant, with one switch (GOOD) worth 5 sd:

- "null": no constant moves the metric; every keep is a false keep.
- "effect": a scripted proposer tries GOOD=1 at iteration 3 among no-effect changes; it should
  be kept.

For each row it prints keeps per no-effect trial (the false-keep rate), the extra trials the run
paid (the noise measurement and confirmations) per run, and, for "effect", how often GOOD=1 was
kept. `--noise off` rows show what the strictly-better rule does on the same draws.

    python bench/noise_keeps.py [--runs 10] [--iterations 20]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arx.core.app.scaffold import init_repo
from arx.core.loop.driver import run_to_end
from arx.core.proposers.base import Proposal, Proposer
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.workspace import open_run
from arx.core.states import TrialKind, TrialState

NOISY = Path(__file__).resolve().parents[1] / "tests" / "support" / "noisy_train.py"


class GoodAtThree(Proposer):
    """No-effect changes, and GOOD=1 at iteration 3."""

    name = "scripted"

    def propose(self, request, feedback=None):
        i = request.iteration
        changes = {"GOOD": 1} if i == 3 else {"A": round(0.1 * (i % 9) + 0.05, 2)}
        return [Proposal(changes=changes, hypothesis="bench", source=self.name)]


def repo(root: Path, salt: int, locked: list[str]) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.email", "bench@example.com"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.name", "bench"], cwd=root, check=True)
    (root / "train.py").write_text(NOISY.read_text().replace("SALT = 0", f"SALT = {salt}"))
    (root / ".gitignore").write_text(".draws\n")
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "bench target"], cwd=root, check=True)
    init_repo(root, target_file="train.py", command=f"{sys.executable} train.py",
              metric="val_bpb", locked=locked)
    return root


def one(tmp: Path, salt: int, scenario: str, noise: str, iterations: int) -> dict:
    locked = ["NOISE_SD", "EFFECT", "SALT"] + (["GOOD"] if scenario == "null" else [])
    root = repo(tmp / f"{scenario}-{noise}-{salt}", salt, locked)
    ws = open_run(root, {"iterations": iterations, "noise": noise,
                         "seed": salt}, name="b")
    proposer = GoodAtThree() if scenario == "effect" else OptunaProposer(seed=salt)
    engine = run_to_end(ws, proposer)
    trials = [r for r in engine.records if r.kind == TrialKind.TRIAL
              and r.state is not TrialState.CONTENDED]
    keeps = [r for r in trials if r.state is TrialState.KEEP]
    extra = [r for r in engine.records if r.kind in (TrialKind.NOISE, TrialKind.CONFIRM)]
    good = any(r.changes.get("GOOD") == 1 for r in keeps)
    false = [r for r in keeps if r.changes.get("GOOD") != 1]
    shutil.rmtree(root, ignore_errors=True)
    return {"trials": len(trials), "false": len(false), "extra": len(extra), "good": good,
            "effect_trials": sum(1 for r in trials if r.changes.get("GOOD") != 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    print(f"{args.runs} runs x {args.iterations} iterations per row; target noise sd 0.01, "
          "GOOD worth 5 sd")
    print(f"{'scenario':<8} {'--noise':<7} {'false keeps / no-effect trials':>31} "
          f"{'extra trials / run':>19} {'GOOD kept':>10} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="arx-bench-noise-") as tmp:
        for scenario in ("null", "effect"):
            for noise in ("auto", "off"):
                start = time.monotonic()
                rows = [one(Path(tmp), salt, scenario, noise, args.iterations)
                        for salt in range(1, args.runs + 1)]
                false = sum(r["false"] for r in rows)
                base = sum(r["effect_trials"] for r in rows)
                extra = sum(r["extra"] for r in rows) / len(rows)
                good = (f"{sum(r['good'] for r in rows)}/{len(rows)}"
                        if scenario == "effect" else "-")
                print(f"{scenario:<8} {noise:<7} {false:>6}/{base:<6} = {false / base:6.1%}"
                      f"{'':>9}{extra:>19.2f} {good:>10} {time.monotonic() - start:>8.1f}")


if __name__ == "__main__":
    main()
