"""How long `arx replay` takes on a 30-iteration branch, without training.

Makes an offline group C run (Level 1.5 every 5 iterations, Level 2 every 2 cycles: catalog
mechanisms through the real gate) on a toy target whose "training" is a short subprocess, then
replays it: the loop again with results served from the trace, and the comparison of every
decision and every commit tree. Prints the run's time, the replay's time and the split.

    python bench/replay_time.py [--iterations 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arx.core.app.scaffold import init_repo
from arx.core.loop.engine import Engine
from arx.core.proposers.offline import OptunaProposer
from arx.core.replay.run import replay
from arx.core.repo.workspace import open_run

TARGET = '''"""A toy target: the metric is an analytic function of its constants."""
import math

LR = 0.02  # best near 0.003
BATCH = 256  # best 32
DEPTH = 6  # best 3
DECAY = 0.1  # best 0.02
WARMUP = 0.5  # best 0.1

loss = (1 + 0.5 * (math.log10(LR) - math.log10(0.003)) ** 2 + 0.05 * (math.log2(BATCH) - 5) ** 2
        + 0.03 * (DEPTH - 3) ** 2 + 0.2 * (math.log10(DECAY) - math.log10(0.02)) ** 2
        + 0.3 * (WARMUP - 0.1) ** 2)
print("---")
print(f"val_bpb: {loss:.6f}")
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
        (root / "toy.py").write_text(TARGET)
        init_repo(root, target_file="toy.py", metric="val_bpb",
                  command=f"{sys.executable} toy.py")
        ws = open_run(root, {"iterations": args.iterations, "group": "C"}, name="bench")
        t0 = time.perf_counter()
        try:
            engine = Engine(ws, OptunaProposer(seed=ws.config.seed))
            engine.run()
        finally:
            ws.close(remove_worktree=True)
        run_s = time.perf_counter() - t0
        times = []
        for k in range(args.repeat):
            t0 = time.perf_counter()
            report = replay(root, "arx/bench", force=k > 0)
            times.append(time.perf_counter() - t0)
            if not report.reproduced:
                print(report.render())
                raise SystemExit("the replay diverged")
        c = report.counts
        print(f"run:    {args.iterations} iterations, group C, {c['commits']} commits, "
              f"{c['level2']} Level-2 mechanisms: {run_s:.2f} s "
              f"(trials {engine.journal.trial_seconds:.2f} s)")
        print(f"replay: {report.steps} steps checked, identical: best {min(times):.2f} s, "
              f"median {sorted(times)[len(times) // 2]:.2f} s of {args.repeat} "
              f"(target: under 10 s)")


if __name__ == "__main__":
    main()
