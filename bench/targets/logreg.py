"""L2-regularised logistic regression in pure Python on a fixed synthetic data set.

200 training and 400 validation samples of 30 correlated features, 12 of them informative: few
samples for the features, so the step size, the regularisation, the batch size, momentum and the
schedule all matter. Deterministic: the data and the shuffling come from SEED.

    python logreg.py        # prints `val_loss: <validation log loss>` after a `---` line
"""

import math
import random

LR = 0.05  # step size; log scale
L2 = 0.0001  # weight of the L2 penalty; log scale
BATCH_SIZE = 64  # samples per step
MOMENTUM = 0.0  # heavy-ball momentum
SCHEDULE = "constant"  # constant | cosine | step: the step size over the epochs
STANDARDIZE = False  # scale each feature to unit variance first
EPOCHS = 15  # passes over the training set (the budget: lock it)
SEED = 0  # data and shuffling (lock it)

N_TRAIN, N_VAL, N_FEATURES, N_INFORMATIVE = 200, 400, 30, 12


def make_data(rng):
    truth = [rng.gauss(0, 1.5) if j < N_INFORMATIVE else 0.0 for j in range(N_FEATURES)]
    scales = [math.exp(rng.uniform(-1.5, 1.5)) for _ in range(N_FEATURES)]
    rows = []
    for _ in range(N_TRAIN + N_VAL):
        common = rng.gauss(0, 1)
        z = [0.6 * common + 0.8 * rng.gauss(0, 1) for _ in range(N_FEATURES)]
        logit = sum(t * v for t, v in zip(truth, z)) / math.sqrt(N_INFORMATIVE)
        y = 1 if rng.random() < 1 / (1 + math.exp(-2.0 * logit)) else 0
        rows.append(([v * s for v, s in zip(z, scales)], y))
    return rows[:N_TRAIN], rows[N_TRAIN:]


def standardize(train, val):
    cols = list(zip(*(x for x, _ in train)))
    mean = [sum(c) / len(c) for c in cols]
    sd = [math.sqrt(sum((v - m) ** 2 for v in c) / len(c)) or 1.0 for c, m in zip(cols, mean)]
    def f(rows):
        return [([(v - m) / s for v, m, s in zip(x, mean, sd)], y) for x, y in rows]
    return f(train), f(val)


def sigmoid(z):
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def log_loss(w, b, rows):
    total = 0.0
    for x, y in rows:
        p = min(max(sigmoid(sum(wi * xi for wi, xi in zip(w, x)) + b), 1e-12), 1 - 1e-12)
        total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / len(rows)


def rate(epoch):
    if SCHEDULE == "cosine":
        return LR * 0.5 * (1 + math.cos(math.pi * epoch / EPOCHS))
    if SCHEDULE == "step":
        return LR * (0.1 ** (epoch * 3 // EPOCHS))
    return LR


def main():
    rng = random.Random(SEED)
    train, val = make_data(rng)
    if STANDARDIZE:
        train, val = standardize(train, val)
    w, b = [0.0] * N_FEATURES, 0.0
    vw, vb = [0.0] * N_FEATURES, 0.0
    for epoch in range(EPOCHS):
        order = list(range(N_TRAIN))
        rng.shuffle(order)
        lr = rate(epoch)
        for start in range(0, N_TRAIN, BATCH_SIZE):
            batch = [train[i] for i in order[start:start + BATCH_SIZE]]
            gw, gb = [L2 * wi for wi in w], 0.0
            for x, y in batch:
                err = (sigmoid(sum(wi * xi for wi, xi in zip(w, x)) + b) - y) / len(batch)
                gw = [g + err * xi for g, xi in zip(gw, x)]
                gb += err
            vw = [MOMENTUM * v + g for v, g in zip(vw, gw)]
            vb = MOMENTUM * vb + gb
            w = [wi - lr * v for wi, v in zip(w, vw)]
            b -= lr * vb
        train_loss = log_loss(w, b, train)
        if not math.isfinite(train_loss):
            break
        print(f"epoch {epoch:3d} | train_loss {train_loss:.4f}")
    print("---")
    print(f"val_loss: {log_loss(w, b, val):.6f}")


if __name__ == "__main__":
    main()
