"""Trials per hour with 1 slot vs N slots, on a target whose "training" is a sleep.

Each trial sleeps ``--sleep`` seconds and prints a metric, so the wall time is the sleep plus
the executor's own cost (writing files, starting the process, Ray scheduling); the ratio shows
how close N slots come to N times the throughput.

    python bench/parallel_throughput.py [--slots 2] [--trials 4] [--sleep 2] [--ray]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from arx.core.execution.executor import Executor, TrialJob
from arx.core.execution.local import LocalExecutor

TARGET = 'import time\nSLEEP = {sleep}\ntime.sleep(SLEEP)\nprint("---\\nval_bpb: 1.0")\n'


def jobs(n: int, sleep: float, tag: str) -> list[TrialJob]:
    return [TrialJob(key=f"{tag}-{i:03d}", files={"train.py": TARGET.format(sleep=sleep)},
                     command="python train.py", timeout_s=sleep * 10 + 30, metric="val_bpb")
            for i in range(n)]


def per_hour(ex: Executor, n: int, sleep: float, tag: str) -> float:
    start = time.perf_counter()
    results = ex.run(jobs(n, sleep, tag))
    wall = time.perf_counter() - start
    bad = [r for r in results if not r.result.ok]
    if bad:
        raise SystemExit(f"{tag}: {bad[0].key} failed: {bad[0].result.reason}")
    return n / wall * 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=2, help="N, the parallel slots (default 2)")
    ap.add_argument("--trials", type=int, default=0, help="trials per setting (default 2N)")
    ap.add_argument("--sleep", type=float, default=2.0, help="seconds per trial (default 2)")
    ap.add_argument("--ray", action="store_true", help="also N slots on a local Ray instance")
    args = ap.parse_args()
    n = args.trials or 2 * args.slots
    print(f"{n} trials of {args.sleep:g} s each (ideal: {3600 / args.sleep:.0f} trials/h a slot)")
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for slots in (1, args.slots):
            with LocalExecutor(Path(tmp) / f"local-{slots}", slots=slots) as ex:
                rows.append((f"local, {slots} slot{'s' * (slots > 1)}",
                             per_hour(ex, n, args.sleep, f"local{slots}")))
        if args.ray:
            import ray

            from arx.core.execution.ray import RayExecutor

            ray.init(num_cpus=args.slots, include_dashboard=False, log_to_driver=False)
            try:
                with RayExecutor(slots=args.slots) as ex:
                    per_hour(ex, args.slots, args.sleep, "warmup")  # start the workers
                    rows.append((f"ray, {args.slots} slots", per_hour(ex, n, args.sleep, "ray")))
            finally:
                ray.shutdown()
    base = rows[0][1]
    for name, rate in rows:
        print(f"  {name:<18} {rate:8.0f} trials/h   x{rate / base:.2f} vs 1 slot")


if __name__ == "__main__":
    main()
