"""What the sandboxed runner worker costs: per iteration, at a (re)start, and at the gate.

    python bench/worker_cost.py [--iterations 200] [--history 30] [--gate-repeats 3]
                                [--isolation bwrap native]

One iteration is what the engine asks the runner (``RunnerPolicy``) for every Level-1 trial:
focus, build_prompt, filter_candidates (4 candidates), select, confirm_seeds, accept and observe,
with a fresh context holding ``--history`` trial records, on the template runner patched with
every catalog mechanism. Printed: the median and 90th percentile per iteration (target: under
50 ms at the median, beside a trial of seconds), the time to start a worker, load the runner and
let it observe the history (after a fault or a Level-2 change), and the gate's total time for one
catalog mechanism (target: under 2 s). Each for every ``--isolation`` (bubblewrap, the worker's
native layers), with the layers that held.
"""

import argparse
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from arx.core.levels.gate import run_gate
from arx.core.levels.mechanism import apply_patches, catalog
from arx.core.levels.policy import RunnerPolicy
from arx.core.levels.worker import RunnerWorker

NAMES = ["LR", "BATCH", "DEPTH", "WD", "WARMUP"]


def record(i):
    name = NAMES[i % len(NAMES)]
    return {"v": 1, "event": "trial", "run": "bench", "iteration": i, "kind": "trial",
            "status": "keep" if i % 3 == 0 else "discard", "changes": {name: 0.01 * (i + 1)},
            "hypothesis": f"try {name}", "config": {n: 0.1 for n in NAMES},
            "metric": 1.0 - 0.001 * i, "best_before": 1.0, "delta": -0.001, "wall_s": 2.0,
            "returncode": 0, "reason": "", "focus": [], "candidates": 4}


def context(i, history):
    return {"iteration": i, "iterations": 1000, "run": "bench", "target_file": "train.py",
            "target_source": "\n".join(f"{n} = 0.1" for n in NAMES) * 40, "metric": "val_bpb",
            "direction": "min", "baseline_metric": 1.0, "best_metric": 0.9, "best_iteration": 3,
            "best_config": {n: 0.1 for n in NAMES}, "active": list(NAMES), "frozen": [],
            "guidance": "", "history": [record(j) for j in range(max(0, i - history), i)],
            "params": [{"name": n, "kind": "float", "value": 0.1, "describe": f"{n} float",
                        "locked": False, "frozen": False} for n in NAMES]}


def accept_all(changes, current, frozen):
    return dict(changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--history", type=int, default=30)
    parser.add_argument("--gate-repeats", type=int, default=3)
    parser.add_argument("--isolation", nargs="+", default=["bwrap", "native"],
                        choices=["bwrap", "native", "auto"])
    args = parser.parse_args()
    for isolation in args.isolation:
        measure(args, isolation)


def measure(args: argparse.Namespace, isolation: str) -> None:
    template = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")
    source = template
    for mech in catalog():
        source = apply_patches(source, mech.patches)
    config = {"direction": "min", "seed": 0, "confirm": 0, "confirm_margin": 0.0,
              "history": 12, "group": "C"}
    history = [record(j) for j in range(args.history)]

    start = time.perf_counter()
    policy = RunnerPolicy.start(source, config, accept_all, deadline_s=10.0,
                                history=(context(args.history, args.history), history),
                                isolation=isolation)
    started = time.perf_counter() - start
    held = policy.sandbox
    bare = []
    for _ in range(5):  # a worker alone: start, fence, first answer
        t = time.perf_counter()
        with RunnerWorker(10.0, isolation=isolation) as worker:
            worker.start()
        bare.append(time.perf_counter() - t)
    per = []
    try:
        for i in range(args.history, args.history + args.iterations):
            ctx = context(i, args.history)
            t = time.perf_counter()
            policy.focus(ctx)
            policy.build_prompt(ctx)
            cands = policy.filter_candidates(ctx, [{"changes": {n: 0.05}, "hypothesis": "h"}
                                                   for n in NAMES[:4]])
            if cands:
                policy.select(ctx, cands)
            policy.confirm_seeds(ctx, 0.95, 0.9)
            policy.accept(ctx, [0.95], [0.9])
            policy.observe(ctx, record(i))
            per.append(time.perf_counter() - t)
    finally:
        policy.close()
    per.sort()
    print(f"runner worker ({isolation}: "
          f"{', '.join(k for k, v in held.items() if v) or 'none'} held; "
          f"{', '.join(k for k, v in held.items() if not v) or 'nothing'} did not), template + "
          f"{', '.join(m.name for m in catalog())}, {args.iterations} iterations with "
          f"{args.history} records of history:")
    print(f"  per iteration (7 hook calls)  median {1000 * statistics.median(per):6.2f} ms, "
          f"p90 {1000 * per[int(0.9 * len(per))]:6.2f} ms  (target < 50 ms)")
    print(f"  worker start (fenced, ready)   median {1000 * statistics.median(bare):6.1f} ms "
          "(target < 100 ms)")
    print(f"  start + load + observe history {1000 * started:6.1f} ms")

    mech = catalog()[-1]
    totals = []
    for _ in range(args.gate_repeats):
        with tempfile.TemporaryDirectory(prefix="arx-gate-bench-") as tmp:
            result = run_gate(apply_patches(template, mech.patches), Path(tmp),
                              mechanism=mech.name)
        if not result.ok:
            raise SystemExit(f"the gate refused {mech.name}: {result.reason}")
        totals.append(result.seconds)
    smoke = result.step("smoke")
    print(f"  gate for {mech.name}            median {statistics.median(totals):6.3f} s "
          f"(smoke {smoke.seconds:.3f} s; target < 2 s)")


if __name__ == "__main__":
    main()
