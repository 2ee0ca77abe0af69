"""Measure the figures in docs/train-figures.md: val_bpb of arx's default target under single changes.

    python bench/train_figures.py                    # baseline (time budget) + the steps-mode table
    python bench/train_figures.py --steps 200 --seeds 1 2 3
    python bench/train_figures.py --only "MATRIX_LR=0.04" "TOTAL_BATCH_SIZE=2**11"

Each run copies train/train.py and train/prepare.py into a temporary folder, rewrites constants
(`NAME = value` at the top of the line, as arx does with libcst), runs `python train.py` and
parses its summary. Steps mode: a change of TOTAL_BATCH_SIZE scales TRAIN_STEPS inversely, so that
every run trains on the same number of tokens, i.e. the step count its own 30 s run would reach at
equal throughput. Needs the data prepared (`python train/prepare.py`).
"""

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = Path(__file__).resolve().parent.parent / "train"


def parse_summary(text):
    """The `key: value` lines after the last `---` line."""
    lines = text.splitlines()
    if "---" not in lines:
        return {}
    tail = lines[len(lines) - lines[::-1].index("---"):]
    return dict(line.split(":", 1) for line in tail if ":" in line)


def run(overrides, timeout=900):
    """Run the target with {NAME: python source of the value}; returns the summary (str values)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("train.py", "prepare.py"):
            shutil.copy(TRAIN / name, tmp)
        path = Path(tmp) / "train.py"
        src = path.read_text()
        for name, value in overrides.items():
            src, n = re.subn(rf"^{name} = [^#\n]*?(\s*#)", rf"{name} = {value}\1", src, flags=re.M)
            assert n == 1, f"constant {name} not found exactly once"
        path.write_text(src)
        proc = subprocess.run([sys.executable, "train.py"], cwd=tmp, capture_output=True,
                              text=True, timeout=timeout)
    summary = {k.strip(): v.strip() for k, v in parse_summary(proc.stdout).items()}
    if proc.returncode != 0 or "val_bpb" not in summary:
        raise RuntimeError(f"run {overrides} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return summary


def constant(name):
    m = re.search(rf"^{name} = ([^#\n]*?)\s*#", (TRAIN / "train.py").read_text(), re.M)
    return eval(m.group(1))  # a literal or constant arithmetic, as in the file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, help="steps-mode step count (default: from the time run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--only", nargs="*", help="NAME=VALUE changes to measure (default: the table)")
    ap.add_argument("--no-time-run", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    steps = args.steps
    if not args.no_time_run:
        s = run({})
        print(f"time budget {constant('TIME_BUDGET')}s: val_bpb {s['val_bpb']}, {s['num_steps']}"
              f" steps, training_seconds {s['training_seconds']}", flush=True)
        steps = steps or int(s["num_steps"])
    steps = steps or 200
    batch, lr = constant("TOTAL_BATCH_SIZE"), constant("MATRIX_LR")
    changes = args.only if args.only is not None else [
        "", f"TOTAL_BATCH_SIZE={batch // 2}", f"TOTAL_BATCH_SIZE={batch * 2}",
        f"MATRIX_LR={lr / 2}", f"MATRIX_LR={lr * 2}"]
    print(f"steps mode, {steps} steps at TOTAL_BATCH_SIZE={batch}, seeds {args.seeds}")
    print("| change | steps | val_bpb per seed | mean ± std |")
    print("|---|---|---|---|")
    for change in changes:
        overrides = dict([change.split("=", 1)]) if change else {}
        n = steps
        if "TOTAL_BATCH_SIZE" in overrides:
            n = steps * batch // eval(overrides["TOTAL_BATCH_SIZE"])
        vals = [float(run({**overrides, "TRAIN_STEPS": n, "SEED": seed})["val_bpb"])
                for seed in args.seeds]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"| {change or 'baseline'} | {n} | {', '.join(f'{v:.4f}' for v in vals)} | "
              f"{statistics.mean(vals):.4f} ± {std:.4f} |", flush=True)
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
