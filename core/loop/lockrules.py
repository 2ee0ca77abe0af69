"""Which parameters of an adopted script ``arx init`` locks by rule, and the rule that says so.

A training script's settings mix hyperparameters with things a search must not touch: how often
it logs or evaluates, where it writes, which device it uses, whether it compiles or reports to
wandb, its seed, and how long it trains (a shorter run "wins" by training less). ``lock_reason``
reads a parameter's name (its last part: ``Args.eval_interval`` -> ``eval_interval``) as words
and says which rule locks it, or None. ``arx init`` prints the rule; ``--only``, ``--lock`` and
``[params] locked`` in arx.toml override it.
"""

from __future__ import annotations

import re

__all__ = ["RULES", "lock_reason", "name_words", "training_length_words"]

#: (what the parameter is, the words that say so)
RULES: tuple[tuple[str, frozenset[str]], ...] = (
    ("experiment tracking", frozenset({"wandb", "mlflow", "tensorboard", "tb", "track",
                                       "comet", "neptune", "project", "entity", "exp",
                                       "experiment"})),
    ("logging", frozenset({"log", "logging", "logger", "verbose", "verbosity", "print", "quiet",
                           "debug", "dry", "progress", "profile", "profiler"})),
    ("evaluation", frozenset({"eval", "evaluate", "evaluation", "val", "valid", "validation",
                              "test", "benchmark"})),
    ("logging/evaluation cadence", frozenset({"interval", "every", "freq", "frequency"})),
    ("checkpointing", frozenset({"ckpt", "checkpoint", "checkpoints", "checkpointing", "save",
                                 "saving"})),
    ("resume flag", frozenset({"resume", "restore", "init_from", "pretrained", "load"})),
    ("I/O and paths", frozenset({"dir", "path", "file", "filename", "out", "output", "root",
                                 "data", "dataset", "url", "download", "workers", "pin",
                                 "video", "capture", "cache"})),
    ("device", frozenset({"device", "cuda", "gpu", "gpus", "cpu", "mps", "ddp", "backend",
                          "accel", "accelerator", "accelerated", "tpu", "xla", "devices",
                          "rank", "world", "distributed", "dtype", "amp", "jobs", "threads",
                          "port", "host"})),
    ("compilation", frozenset({"compile", "jit", "cudnn", "deterministic", "tf32"})),
    ("seed", frozenset({"seed", "random_state"})),
)
_LENGTH = frozenset({"steps", "iters", "iterations", "epochs", "timesteps", "updates", "budget"})
_LENGTH_QUALIFIERS = frozenset({"max", "total", "train", "training", "num", "n", "time"})


def name_words(name: str) -> list[str]:
    """The words of a parameter's last name part, lowercased: ``--evalInterval`` ->
    ``['eval', 'interval']``; pairs such as ``init_from`` and ``random_state`` are kept too."""
    last = name.rpartition(":")[2].rsplit(".", 1)[-1].lstrip("-")  # config.py:LR -> LR
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", last)
    words = [w.lower() for w in re.split(r"[_\-\s]+", spaced) if w]
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def training_length_words(name: str) -> bool:
    """Whether the name says how long training runs (``max_iters``, ``total_timesteps``,
    ``epochs``, ``TIME_BUDGET``), as opposed to a schedule inside it (``warmup_iters``,
    ``lr_decay_iters``, ``gradient_accumulation_steps``, ``update_epochs``)."""
    words = name_words(name)
    plain = [w for w in words if "_" not in w]
    if not any(w in _LENGTH for w in plain):
        return False
    return len(plain) == 1 or any(w in _LENGTH_QUALIFIERS for w in plain)


def lock_reason(name: str) -> str | None:
    """The rule that locks parameter ``name``, e.g. ``evaluation (the name says 'eval')``."""
    words = name_words(name)
    for what, vocabulary in RULES:
        hit = next((w for w in words if w in vocabulary), None)
        if hit is not None:
            return f"{what} (the name says '{hit}')"
    if training_length_words(name):
        return "training length: a shorter run would win by training less"
    return None
