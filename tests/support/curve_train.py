"""Toy target that prints a learning curve: ``val_bpb`` after each evaluation, then the summary.

Its curve is ``loss() * (1 + 1 / (1 + step))``: a worse configuration is worse at every step, by
the same share, so pruning can tell it early. Each evaluation waits ``EVAL_SLEEP`` seconds (the
"training" between two evaluations), so a pruned trial is measurably shorter than a full one.
With ``TRAIN_STEPS = 0`` (time mode, ``--budget``) it evaluates every ``EVAL_SLEEP`` seconds until
``TIME_BUDGET`` seconds have passed, ``100 // EVALS`` steps at a time.
"""

import math
import time

LR = 0.003  # best near 0.003
DEPTH = 3  # best 3
SEED = 0  # moves the metric by at most 0.001
TRAIN_STEPS = 100  # steps of pretend training
EVALS = 8  # evaluations during training (the curve's points)
EVAL_SLEEP = 0.02  # seconds between two evaluations
TIME_BUDGET = 0.0  # seconds of training when TRAIN_STEPS is 0 (time mode)


def loss():
    value = 1.0
    value += 0.5 * (math.log10(LR) - math.log10(0.003)) ** 2
    value += 0.03 * (DEPTH - 3) ** 2
    value += 0.001 * ((SEED * 7919) % 13) / 13
    return value


def main():
    start = time.time()
    every = max(1, (TRAIN_STEPS or 100) // EVALS)
    step = 0
    while step + every <= TRAIN_STEPS if TRAIN_STEPS else time.time() - start < TIME_BUDGET:
        step += every
        time.sleep(EVAL_SLEEP)
        print(f"step {step:05d} | lr {LR:g}")
        print(f"val_bpb: {loss() * (1 + 1 / (1 + step)):.6f}")
    print("---")
    print(f"val_bpb:          {loss():.6f}")
    print(f"training_seconds: {time.time() - start:.2f}")
    print(f"num_steps:        {TRAIN_STEPS or step}")


if __name__ == "__main__":
    main()
