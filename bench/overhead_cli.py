"""arx's own time per iteration through the real command line, and how it grows with the run.

    python bench/overhead_cli.py [--iterations 300] [--group A] [--at 10,100,300]

A throwaway repository holds a trivial target (``t.py``: the metric is a formula of its four
constants, a float on a log scale, a power-of-two int, a float and a bool) that also writes the
time it started to a stamp file. ``arx init`` adopts it and ``arx run`` runs it in a child
process, exactly as a user would. Measured:

- the target's own time: the same command run bare (``subprocess.run``), median of 20;
- arx's time per iteration: the interval between two trial starts minus the target's own time
  (what arx adds: supervision, the decision, the trace, the commit, the runner's hooks, the
  proposer and the patch), median over a window of 9 iterations around each ``--at`` point;
- the fixed cost: from the command's start to the baseline trial's start plus from the last
  trial's start to the command's exit, minus one target's own time.

Aim (issue #16): under 30 ms per iteration beyond the target's own time, flat with the run's
length (within 2x from iteration 10 to 1000).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = '''"""Trivial target for bench/overhead_cli.py: the metric is a formula of its constants."""
import sys
import time

X = 1.0  # a float on a log scale; best 0.3
Y = 4  # a power of two; best 8
Z = 0.5  # best 0.1
USE = True  # False is better

with open(sys.argv[1], "a") as fh:
    fh.write(f"{time.time()}\\n")
print(f"val: {(X - 0.3) ** 2 + 0.01 * (Y - 8) ** 2 + (Z - 0.1) ** 2 + (0.1 if USE else 0.0):.6f}")
'''


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def arx_command() -> list[str]:
    """`arx` as installed, else the module (a checkout on PYTHONPATH)."""
    exe = shutil.which("arx")
    return [exe] if exe else [sys.executable, "-m", "arx.cli.main"]


def setup(root: Path, stamps: Path) -> str:
    sh("git", "init", "-q", "-b", "main", str(root), cwd=root.parent)
    sh("git", "config", "user.email", "bench@example.com", cwd=root)
    sh("git", "config", "user.name", "bench", cwd=root)
    (root / "t.py").write_text(TARGET)
    sh("git", "add", "t.py", cwd=root)
    sh("git", "commit", "-qm", "a trivial target", cwd=root)
    command = f"{sys.executable} t.py {stamps}"
    sh(*arx_command(), "init", ".", "--target", "t.py", "--command", command, "--metric", "val",
       cwd=root)
    return command


def bare_seconds(root: Path, command: str, n: int = 20) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(command, shell=True, cwd=root, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def window(gaps: list[float], at: int, half: int = 4) -> float | None:
    """Median of the gaps of iterations at-half .. at+half (gap i: trial i-1's start to i's)."""
    lo, hi = max(1, at - half), min(len(gaps) - 1, at + half)
    return statistics.median(gaps[lo:hi + 1]) if lo <= hi else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--group", default="A")
    ap.add_argument("--at", default="10,100,300,1000", help="iterations to report")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        stamps = Path(tmp) / "stamps"
        command = setup(root, stamps)
        bare = bare_seconds(root, command)
        stamps.unlink(missing_ok=True)
        env = {**os.environ, "ARX_NOISE": "off"}
        t0 = time.time()
        subprocess.run([*arx_command(), "run", "--iterations", str(args.iterations),
                        "--group", args.group, "--quiet"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        t1 = time.time()
        starts = [float(line) for line in stamps.read_text().split()]
    # starts[0] is the baseline; one trial per iteration (noise off, no confirmations)
    gaps = [0.0] + [(b - a) - bare for a, b in zip(starts, starts[1:])]
    fixed = (starts[0] - t0) + (t1 - starts[-1]) - bare
    print(f"target: {command!r}; {args.iterations} iterations, group {args.group}, "
          f"{len(starts)} trials")
    print(f"target's own time (bare subprocess, median of 20): {bare * 1000:.1f} ms")
    print(f"whole command: {t1 - t0:.2f} s; fixed cost (start + end): {fixed:.2f} s")
    for at in (int(a) for a in args.at.split(",")):
        value = window(gaps, at) if at <= args.iterations else None
        if value is not None:
            print(f"arx time per iteration near #{at:<5} {value * 1000:7.1f} ms")
    rest = gaps[1:]
    if rest:
        print(f"arx time per iteration, whole run: median {statistics.median(rest) * 1000:.1f} "
              f"ms, mean {statistics.fmean(rest) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
