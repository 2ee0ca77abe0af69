"""Test target in time mode that measures its own work: how many loop turns fit in its budget.

A machine that is busy elsewhere gives it fewer turns and a worse metric, whatever its
constants say: the situation contention detection is for.
"""

import time

TIME_BUDGET = 0.6  # seconds of work
SCALE = 1.0  # no effect
SEED = 0  # no effect


def main():
    start = time.process_time()
    wall = time.monotonic()
    turns = 0
    while time.monotonic() - wall < TIME_BUDGET:
        for _ in range(2000):
            turns += 1
    print("---")
    print(f"val_bpb:          {1e6 / max(turns, 1):.6f}")
    print(f"num_steps:        {turns}")
    print(f"training_seconds: {time.monotonic() - wall:.3f}")
    print(f"cpu_seconds:      {time.process_time() - start:.3f}")


if __name__ == "__main__":
    main()
