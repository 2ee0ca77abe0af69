"""What reading learning curves costs: per curve point, on a log where half the lines are points.

    python bench/curve_cost.py [--lines 200000]

The scanner of a trial's output (``execution.trial._Scanner``) reads every line; with curves it
also looks for the step a line names and turns each metric line before the summary into a point
(``execution.curve``). Printed: microseconds per line and per point, with curves read and with
the same log read by a scanner whose curve reader is switched off (target: under 1 ms per point).
"""

import argparse
import time

from arx.core.execution.trial import _Scanner


class _Off:
    """A curve reader that reads nothing: the scanner as it was before curves."""

    unit = None
    points: list = []
    stride = 1

    def step_line(self, line):
        pass

    def point(self, value):
        return False


def timed(lines, curves: bool) -> float:
    scanner = _Scanner("val_bpb", None)
    if not curves:
        scanner.curve = _Off()
    t0 = time.perf_counter()
    for line in lines:
        scanner.feed(line)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    lines = [f"step {k:06d} | loss 2.5 | dt 120ms | tok/s 51234" if k % 2
             else f"val_bpb: {1 + 1 / (k + 1):.6f}" for k in range(args.lines)]
    points = args.lines // 2
    on = min(timed(lines, True) for _ in range(3))
    off = min(timed(lines, False) for _ in range(3))
    print(f"{args.lines} lines, {points} curve points (best of 3)")
    print(f"with curves:    {on / args.lines * 1e6:.2f} us/line, {on / points * 1e6:.2f} us/point")
    print(f"without curves: {off / args.lines * 1e6:.2f} us/line")
    print(f"curve overhead: {(on - off) / points * 1e6:.2f} us per point (target < 1000 us)")


if __name__ == "__main__":
    main()
