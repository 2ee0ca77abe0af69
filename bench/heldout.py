"""What a run claims against what is true: in-search and held-out deltas on a known truth.

Runs real default arx runs (offline Optuna proposer, ``--noise auto``, held-out verification as
the run does it) on ``tests/support/truth_train.py``, a target whose metric is a known function
of its constants plus noise of sd 0.02 drawn from the seed and the configuration. For each run
it prints the spread arx estimated, its keeps and how many of them were truly worse than the
config they replaced, the in-search delta the run decided on, the held-out delta with its
standard error, and the true delta of the kept configuration; then, over the runs, how much the
in-search claim over-states the truth, how often the held-out delta lies within 3 standard
errors of the truth, and the share of false keeps.

    python bench/heldout.py [--runs 10] [--iterations 20] [--rules 4] [--confidence 0.8]

``--rules N`` runs the runs under an older revision of the rules (4: before the noise
correction and verification), to measure the before and after; ``--confidence`` sets the
confidence of the spread's bound (``stats.SD_CONFIDENCE``). The table in docs/results.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import tomlkit

from arx.core.app.scaffold import init_repo
from arx.core.loop import stats
from arx.core.loop.driver import run_to_end
from arx.core.loop.noise import latest_noise, reported
from arx.core.loop.trace import trace_events
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.workspace import open_run
from arx.core.states import Event, TrialKind, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import with_space  # noqa: E402 - bench/ is not a package

TRUTH = Path(__file__).resolve().parents[1] / "tests" / "support" / "truth_train.py"
SPACE = {
    "LR": {"type": "float", "low": 0.0005, "high": 0.1, "log": True},
    "WIDTH": {"type": "int", "low": 8, "high": 512, "pow2": True},
    "DROPOUT": {"type": "float", "low": 0.0, "high": 0.5},
    "WARMUP": {"type": "float", "low": 0.0, "high": 0.3},
    "ACTIVATION": {"type": "str", "choices": ["relu", "gelu", "tanh"]},
    "NORM": {"type": "str", "choices": ["layer", "rms"]},
}


def truth_module():
    spec = importlib.util.spec_from_file_location("truth_train", TRUTH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_repo(root: Path, salt: int = 0) -> Path:
    root.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "bench@example.com"],
                 ["config", "user.name", "bench"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    (root / "train.py").write_text(TRUTH.read_text().replace("SALT = 0", f"SALT = {salt}"))
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "truth target"], cwd=root, check=True)
    init_repo(root, target_file="train.py", command=f"{sys.executable} train.py",
              metric="val_loss", direction="min", locked=["NOISE_SD", "SALT"])
    doc = with_space(tomlkit.parse((root / "arx.toml").read_text()), SPACE)
    (root / "arx.toml").write_text(tomlkit.dumps(doc))
    subprocess.run(["git", "commit", "-qam", "bench space"], cwd=root, check=True)
    return root


def one(tmp: Path, seed: int, iterations: int, rules: int | None, truth) -> dict:
    root = make_repo(tmp / f"run-{seed}", salt=seed)
    ws = open_run(root, {"iterations": iterations, "seed": seed}, name="h")
    if rules is not None:
        ws.config = replace(ws.config, rules=rules)
    run_to_end(ws, offline_proposer(ws.config))
    events = trace_events(ws.repo, ws.name)  # from the branch: the worktree is gone
    records = [e for e in events if e.get("event") == Event.TRIAL]
    base_rec = next(r for r in records if r.get("status") == TrialState.BASELINE)
    base_cfg = {k: base_rec["config"][k] for k in truth.TUNED}
    keeps = [r for r in records if r.get("status") == TrialState.KEEP
             and r.get("kind") == TrialKind.TRIAL]
    false_keeps, before = 0, base_cfg
    for k in keeps:
        after = {**before, **{n: v for n, v in k["config"].items() if n in truth.TUNED}}
        false_keeps += truth.truth(after) >= truth.truth(before)
        before = after
    noise = latest_noise(events)
    base, best = reported(records, noise)
    verify = next((e for e in reversed(events) if e.get("event") == Event.VERIFY), None)
    return {"sd": (noise or {}).get("sd"), "keeps": len(keeps), "false": false_keeps,
            "claimed": best - base if best is not None and base is not None else 0.0,
            "true": truth.truth(before) - truth.truth(base_cfg),
            "held": verify.get("delta") if verify else None,
            "se": verify.get("se") if verify else None,
            "confirmed": verify.get("confirmed") if verify else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--rules", type=int, default=None,
                    help="run under this revision of the rules (default: the current one)")
    ap.add_argument("--confidence", type=float, default=None,
                    help="the confidence of the spread's upper bound (default: arx's own)")
    args = ap.parse_args()
    if args.confidence is not None:
        stats.SD_CONFIDENCE = args.confidence
    truth = truth_module()
    print(f"{args.runs} default runs x {args.iterations} iterations, true noise sd "
          f"{truth.NOISE_SD}, rules {args.rules or 'current'}, confidence {stats.SD_CONFIDENCE}")
    print(f"{'seed':>4} {'sd est':>7} {'keeps':>5} {'false':>5} {'in-search':>10} "
          f"{'held-out':>10} {'+- se':>8} {'true':>8} {'|held-true|/se':>14} {'confirmed':>9}")
    rows = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="arx-bench-heldout-") as tmp:
        for seed in range(1, args.runs + 1):
            r = one(Path(tmp), seed, args.iterations, args.rules, truth)
            rows.append(r)
            z = abs(r["held"] - r["true"]) / r["se"] if r["held"] is not None and r["se"] \
                else None
            held = f"{r['held']:+10.4f}" if r["held"] is not None else f"{'-':>10}"
            se = f"{r['se']:8.4f}" if r["se"] is not None else f"{'-':>8}"
            print(f"{seed:>4} {r['sd'] or 0:7.4f} {r['keeps']:>5} {r['false']:>5} "
                  f"{r['claimed']:+10.4f} {held} {se} {r['true']:+8.4f} "
                  f"{(f'{z:.2f}' if z is not None else '-'):>14} "
                  f"{str(r['confirmed']) if r['confirmed'] is not None else '-':>9}",
                  flush=True)
    gained = [r for r in rows if r["true"] < 0]
    keeps = sum(r["keeps"] for r in rows)
    false = sum(r["false"] for r in rows)
    print(f"sd estimated: mean {statistics.fmean(r['sd'] or 0 for r in rows):.4f} "
          f"(true {truth.NOISE_SD})")
    if gained:
        ratio = statistics.fmean(r["claimed"] / r["true"] for r in gained)
        over = statistics.fmean(r["claimed"] - r["true"] for r in gained)
        print(f"in-search claim / true gain: mean {ratio:.2f}x; claimed - true: mean "
              f"{over:+.4f} (over {len(gained)} runs with a true gain)")
    held = [r for r in rows if r["held"] is not None and r["se"]]
    if held:
        within = sum(abs(r["held"] - r["true"]) <= 3 * r["se"] for r in held)
        print(f"held-out within 3 se of the truth: {within}/{len(held)}; held-out - true: mean "
              f"{statistics.fmean(r['held'] - r['true'] for r in held):+.4f}")
        print(f"confirmed on held-out seeds: {sum(bool(r['confirmed']) for r in held)}"
              f"/{len(held)}")
    print(f"true gain per run: mean {statistics.fmean(r['true'] for r in rows):+.4f}; keeps "
          f"per run {keeps / len(rows):.2f}")
    print(f"false keeps (truly no better than the config they replaced): {false}/{keeps}"
          f" = {false / keeps if keeps else 0:.1%}")
    print(f"{time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
