"""Toy target for arx's loop tests: the metric is an analytic function of the constants.

It behaves like a training script (constants block, summary block, exit codes) but "trains" in
milliseconds, so a 30-iteration run takes seconds. MODE selects failure behaviours on purpose.
"""

import math
import sys
import time

LR = 0.02  # learning rate; best near 0.003
BATCH_SIZE = 2**8  # tokens per step; best 32
DEPTH = 6  # layers; best 3
WEIGHT_DECAY = 0.1  # best 0.02
WARMUP_RATIO = 0.5  # best 0.1
USE_BIAS = True  # False is a little better
ACTIVATION = "relu"  # "gelu" is a little better
MODE = "ok"  # ok | crash | hang | nan | nometric | fail
SEED = 0  # moves the metric by at most 0.001
TIME_BUDGET = 0.05  # seconds of pretend training
TRAIN_STEPS = 0  # 0: time mode


def loss():
    value = 1.0
    value += 0.5 * (math.log10(LR) - math.log10(0.003)) ** 2
    value += 0.05 * (math.log2(BATCH_SIZE) - 5) ** 2
    value += 0.03 * (DEPTH - 3) ** 2
    value += 0.2 * (math.log10(max(WEIGHT_DECAY, 1e-6)) - math.log10(0.02)) ** 2
    value += 0.3 * (WARMUP_RATIO - 0.1) ** 2
    value += 0.01 if USE_BIAS else 0.0
    value += 0.0 if ACTIVATION == "gelu" else 0.02
    value += 0.001 * ((SEED * 7919) % 13) / 13
    return value


def main():
    start = time.time()
    if MODE == "crash":
        raise RuntimeError("toy crash on purpose")
    if MODE == "hang":
        while True:
            time.sleep(1)
    steps = TRAIN_STEPS or max(1, int(TIME_BUDGET * 200))
    time.sleep(TIME_BUDGET if not TRAIN_STEPS else 0.0)
    for step in range(0, steps, max(1, steps // 3)):
        print(f"step {step:05d} | loss {loss() + 1.0 / (step + 1):.4f}")
    if MODE == "fail":
        print("FAIL")
        sys.exit(1)
    metric = float("nan") if MODE == "nan" else loss()
    print("---")
    if MODE != "nometric":
        print(f"val_bpb:          {metric:.6f}")
    print(f"training_seconds: {time.time() - start:.2f}")
    print(f"num_steps:        {steps}")
    print("depth:            " + str(DEPTH))


if __name__ == "__main__":
    main()
