"""arx's own time per Level-1 iteration, measured on a trivial target.

The target's "training" is one awk call that prints its constant X as the metric, so nearly all
of the wall time is arx: proposing (Optuna), validating, patching with libcst, the trace,
commits, the runner hooks. Prints ms per iteration and the share of a 300 s trial.

    python bench/loop_overhead.py [--iterations 30]
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
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

TARGET = "X = 1.0  # the metric\nY = 4  # unused\nZ = 0.5  # unused\n"


class Timed:
    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn):
        def inner(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t
        return inner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
        (root / "t.py").write_text(TARGET)
        init_repo(root, target_file="t.py", metric="val_bpb",
                  command="awk '/^X = /{print \"val_bpb: \" $3}' t.py")
        ws = open_run(root, {"iterations": args.iterations}, name="bench")
        proposer = OptunaProposer(seed=0)
        propose, commit = Timed(), Timed()
        proposer.propose = propose.wrap(proposer.propose)
        ws.tree.commit = commit.wrap(ws.tree.commit)
        engine = Engine(ws, proposer)
        t0 = time.perf_counter()
        engine.run()
        total = time.perf_counter() - t0
        ws.close(remove_worktree=True)
        n = args.iterations + 1  # baseline included
        n_commits = len(GitRepo(root).log("arx/bench"))
    own = total - engine.journal.trial_seconds
    per_iter = own / n
    print(f"iterations:                 {args.iterations} (+ baseline), {n_commits} commits on the branch")
    print(f"total wall:                 {total:.2f} s; trial subprocesses {engine.journal.trial_seconds:.2f} s")
    print(f"arx overhead per iteration: {per_iter * 1000:.1f} ms "
          f"(proposer {propose.seconds / n * 1000:.1f} ms, commits {commit.seconds / n * 1000:.1f} ms)")
    print(f"share of a 300 s trial:     {per_iter / 300 * 100:.3f} %")


if __name__ == "__main__":
    sys.exit(main())
