"""A BBOB function of the COCO platform (``pip install coco-experiment``) as a training script.

Five constants of mixed types are mapped onto the point x in [-5, 5]^5 where the function is
evaluated: a float on a linear scale, a float on a log scale, an int, a power of two and a
categorical (its values land on fixed coordinates in no particular order). The metric is log10
of the regret f(x) - f_opt (+1e-8): lower is better, and 1 is a factor of ten.

    python bbob.py          # prints `regret: <log10 regret>` after a `---` line

FUNCTION (1-24) and INSTANCE pick the problem: the experiment, not the search (lock them).
f_opt is f at the optimum COCO reports (``Problem._best_parameter``, which writes it to a file
in the working directory; a temporary one here).
"""

import math
import os
import tempfile

import cocoex

FUNCTION = 15  # BBOB function index, 1-24
INSTANCE = 1  # BBOB instance (where the optimum lies)
OFFSET = 0.0  # linear, in [-5, 5]
SCALE = 1.0  # log scale, in [0.01, 1000]
LAYERS = 6  # an int, in [1, 11]
WIDTH = 32  # a power of two, in [1, 1024]
OPTIMIZER = "sgd"  # one of sgd, adam, lion, rmsprop, adagrad
# Knobs that barely matter, as many constants of a real training script do: together they move
# the regret by at most a few percent (locked in the plain bbob-f* problems, tuned in *-knobs).
DROPOUT = 0.1  # in [0, 0.5]
WARMUP = 100  # in [0, 1000]
BETA2 = 0.95  # in [0.9, 0.999]
GRAD_CLIP = 1.0  # in [0.1, 10], log scale
EMA = False  # a bool
LOG_EVERY = 50  # in [10, 500]



def point():
    """x in [-5, 5]^5 (the categorical's coordinates are fixed here, not tunable)."""
    category = {"sgd": 2.0, "adam": -4.0, "lion": 0.0, "rmsprop": 4.0, "adagrad": -2.0}
    return [OFFSET, 2.0 * math.log10(SCALE) - 1.0, LAYERS - 6.0, math.log2(WIDTH) - 5.0,
            category[OPTIMIZER]]


def optimum(problem):
    """f at the optimum: COCO writes its location to a file in the working directory."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            problem._best_parameter("print")
            with open("._bbob_problem_best_parameter.txt") as fh:
                xopt = [float(v) for v in fh.read().split()]
        finally:
            os.chdir(here)
    return problem(xopt)


def knobs():
    """A factor within [1, 1.05] on the regret (about 0.02 in log10 at most): small, smooth."""
    parts = [DROPOUT / 0.5, WARMUP / 1000, (BETA2 - 0.9) / 0.099,
             abs(math.log10(GRAD_CLIP)), 1.0 if EMA else 0.0, (LOG_EVERY - 10) / 490]
    return 1.0 + 0.05 * sum(parts) / len(parts)


def main():
    suite = cocoex.Suite("bbob", "", f"dimensions:5 function_indices:{FUNCTION} "
                                     f"instance_indices:{INSTANCE}")
    problem = next(iter(suite))
    fopt = optimum(problem)
    f = problem(point())
    print("---")
    print(f"regret: {math.log10(max(f - fopt, 0.0) * knobs() + 1e-8):.6f}")
    print(f"f: {f:.6f}")
    print(f"f_opt: {fopt:.6f}")


if __name__ == "__main__":
    main()
