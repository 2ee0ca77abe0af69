"""Time of the Level-2 gate, per step, on the template runner patched with a catalog mechanism.

    python bench/gate_time.py [--mechanism TabuList] [--repeats 5]

Each repeat runs the whole gate (parse, ruff, safety, smoke: a pytest subprocess driving the
runner through 2 x 8 simulated iterations) in a fresh scratch directory. The median of each step
is printed, then the best and worst totals; the target is under 5 s in total.
"""

import argparse
import statistics
import tempfile
from importlib.resources import files
from pathlib import Path

from arx.core.levels.gate import run_gate
from arx.core.levels.mechanism import apply_patches, catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mechanism", default="TabuList",
                        choices=sorted(m.name for m in catalog()) + ["all"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    source = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")
    chosen = [m for m in catalog() if args.mechanism in ("all", m.name)]
    for mech in chosen:
        source = apply_patches(source, mech.patches)
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="arx-gate-bench-") as tmp:
            result = run_gate(source, Path(tmp), mechanism=chosen[0].name)
        if not result.ok:
            raise SystemExit(f"the gate refused {args.mechanism}: {result.reason}")
        runs.append(result)
    print(f"gate on the template runner + {args.mechanism}, {args.repeats} runs "
          f"(median per step):")
    for i, step in enumerate(runs[0].steps):
        times = [r.steps[i].seconds for r in runs]
        print(f"  {step.name:<7} {statistics.median(times):6.3f} s")
    totals = sorted(r.seconds for r in runs)
    print(f"  total   {statistics.median(totals):6.3f} s  (best {totals[0]:.3f}, "
          f"worst {totals[-1]:.3f}; target < 5 s)")


if __name__ == "__main__":
    main()
