"""Test target whose metric is noise around a constant, plus one real effect.

Every run draws its noise from a counter kept beside the script (``.draws``), so a test's whole
sequence of measurements is fixed while no constant, seed included, changes the noise: the
spread arx measures on the baseline is the spread every trial has. Only ``GOOD`` moves the
metric (by ``EFFECT``); the other constants do nothing.
"""

import random
from pathlib import Path

GOOD = 0  # 1: the metric improves by EFFECT
A = 0.5  # no effect
B = 8  # no effect
C = 0.01  # no effect
D = "x"  # no effect
SEED = 0  # no effect either: noise does not follow the seed
NOISE_SD = 0.01
EFFECT = 0.05  # 5 x NOISE_SD
SALT = 0  # selects the test's noise sequence


def main():
    counter = Path(__file__).with_name(".draws")
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    noise = random.Random(f"{SALT}-{n}").gauss(0.0, NOISE_SD)
    metric = 1.0 - EFFECT * GOOD + noise
    print("---")
    print(f"val_bpb:          {metric:.6f}")
    print("num_steps:        10")
    print("training_seconds: 0.01")


if __name__ == "__main__":
    main()
