"""A small multilayer perceptron in numpy: three interleaved spirals, classified.

600 training and 600 validation points in 2-d, 3 classes; the net is trained for a fixed number
of steps with its own backpropagation (no framework). Deterministic: data, initialisation and
batches come from SEED.

    python mlp.py           # prints `val_loss: <validation cross-entropy>` after a `---` line

Every CURVE_EVERY steps it also prints the validation loss so far (a `step N` line, then
`val_loss: X`): the learning curve arx's pruning reads.
"""

import math

import numpy as np

LR = 0.01  # step size; log scale
WEIGHT_DECAY = 0.0001  # decoupled weight decay per step; log scale
HIDDEN = 32  # units per hidden layer
DEPTH = 2  # hidden layers
BATCH_SIZE = 32  # samples per step
ACTIVATION = "relu"  # relu | tanh | softplus
INIT_SCALE = 1.0  # multiplies the He/Glorot initialisation; log scale
OPTIMIZER = "sgd"  # sgd | momentum | adam
STEPS = 400  # optimisation steps (the budget: lock it)
SEED = 0  # data, initialisation and batches (lock it)
CURVE_EVERY = 25  # steps between two val_loss evaluations, the learning curve (lock it; 0: none)

N, CLASSES = 600, 3


def spirals(rng, n):
    per = n // CLASSES
    xs, ys = [], []
    for c in range(CLASSES):
        r = np.linspace(0.05, 1.0, per)
        t = np.linspace(c * 2 * math.pi / CLASSES, c * 2 * math.pi / CLASSES + 5.0, per)
        t = t + rng.normal(0, 0.35, per)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(per, c))
    return np.concatenate(xs), np.concatenate(ys)


def act(z):
    if ACTIVATION == "tanh":
        return np.tanh(z)
    if ACTIVATION == "softplus":
        return np.logaddexp(0.0, z)
    return np.maximum(z, 0.0)


def act_grad(z):
    if ACTIVATION == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if ACTIVATION == "softplus":
        return 1.0 / (1.0 + np.exp(-z))
    return (z > 0).astype(z.dtype)


def forward(params, x):
    zs, hs = [], [x]
    for i, (w, b) in enumerate(params):
        z = hs[-1] @ w + b
        zs.append(z)
        hs.append(act(z) if i < len(params) - 1 else z)
    return zs, hs


def cross_entropy(logits, y):
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), np.exp(logp)


def main():
    rng = np.random.default_rng(SEED)
    x_train, y_train = spirals(rng, N)
    x_val, y_val = spirals(rng, N)
    sizes = [2] + [HIDDEN] * DEPTH + [CLASSES]
    gain = math.sqrt(2.0) if ACTIVATION == "relu" else 1.0
    params = [(rng.normal(0, INIT_SCALE * gain / math.sqrt(a), (a, b)), np.zeros(b))
              for a, b in zip(sizes, sizes[1:])]
    moments = [(np.zeros_like(w), np.zeros_like(b)) for w, b in params]
    squares = [(np.zeros_like(w), np.zeros_like(b)) for w, b in params]
    with np.errstate(all="ignore"):
        for step in range(1, STEPS + 1):
            idx = rng.integers(0, len(x_train), BATCH_SIZE)
            zs, hs = forward(params, x_train[idx])
            loss, probs = cross_entropy(hs[-1], y_train[idx])
            delta = probs
            delta[np.arange(len(idx)), y_train[idx]] -= 1.0
            delta /= len(idx)
            for i in reversed(range(len(params))):
                w, b = params[i]
                gw, gb = hs[i].T @ delta, delta.sum(axis=0)
                if i:
                    delta = (delta @ w.T) * act_grad(zs[i - 1])
                m, s = moments[i], squares[i]
                if OPTIMIZER == "adam":
                    m = (0.9 * m[0] + 0.1 * gw, 0.9 * m[1] + 0.1 * gb)
                    s = (0.999 * s[0] + 0.001 * gw ** 2, 0.999 * s[1] + 0.001 * gb ** 2)
                    c1, c2 = 1 - 0.9 ** step, 1 - 0.999 ** step
                    uw = m[0] / c1 / (np.sqrt(s[0] / c2) + 1e-8)
                    ub = m[1] / c1 / (np.sqrt(s[1] / c2) + 1e-8)
                elif OPTIMIZER == "momentum":
                    m = (0.9 * m[0] + gw, 0.9 * m[1] + gb)
                    uw, ub = m
                else:
                    uw, ub = gw, gb
                moments[i], squares[i] = m, s
                params[i] = (w * (1 - WEIGHT_DECAY) - LR * uw, b - LR * ub)
            if step % 100 == 0:
                print(f"step {step:4d} | loss {loss:.4f}")
            if CURVE_EVERY and step % CURVE_EVERY == 0 and step < STEPS:
                val, _ = cross_entropy(forward(params, x_val)[1][-1], y_val)
                print(f"step {step:4d} | eval")
                print(f"val_loss: {val if math.isfinite(val) else float('nan'):.6f}")
        val_loss, probs = cross_entropy(forward(params, x_val)[1][-1], y_val)
    accuracy = float((probs.argmax(axis=1) == y_val).mean())
    print("---")
    print(f"val_loss: {val_loss:.6f}")
    print(f"val_accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
