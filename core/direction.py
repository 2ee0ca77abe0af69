"""Which way a metric improves, from its name: never silent, never guessed.

``arx init --metric accuracy`` without ``--direction`` used to minimise accuracy. ``infer``
reads the words of a metric's name (``val_acc``, ``eval/f1``, ``testLoss``) against two
vocabularies and returns the direction with the word that decided it; a name that says
neither returns None, and init refuses it, naming ``--direction``. The last deciding word wins
(``top1_error`` is an error, ``loss_of_accuracy`` ... would be read as accuracy), so a name is
read the way it is usually written, qualifier first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: words meaning higher is better
MAX_WORDS = frozenset({
    "accuracy", "acc", "f1", "f1score", "fscore", "auc", "auroc", "auprc", "roc", "ap", "map",
    "bleu", "rouge", "meteor", "chrf", "reward", "rewards", "return", "returns", "score",
    "iou", "miou", "dice", "r2", "precision", "recall", "top1", "top5", "ndcg", "mrr", "psnr",
    "ssim", "hitrate", "hits", "winrate", "kappa", "mcc", "pearson", "spearman", "corr",
    "correlation", "likelihood", "elbo", "coverage", "success", "exact", "em", "pass",
})
#: words meaning lower is better
MIN_WORDS = frozenset({
    "loss", "losses", "error", "err", "errors", "perplexity", "ppl", "bpb", "bpc", "bits",
    "mse", "mae", "rmse", "mape", "smape", "wer", "cer", "ter", "nll", "cost", "regret",
    "latency", "fid", "kid", "distance", "divergence", "kl", "ece", "brier", "risk", "mad",
    "chamfer", "epe", "ade", "fde", "eer", "far", "frr", "rank",
})
#: long words also recognised inside a run-together name (``valloss``, ``testaccuracy``)
_EMBEDDED = {"accuracy": "max", "perplexity": "min", "loss": "min", "error": "min",
             "reward": "max", "score": "max"}


@dataclass(frozen=True)
class Inferred:
    direction: str  # "min" or "max"
    word: str  # the word of the name that decided it

    def why(self) -> str:
        better = "lower" if self.direction == "min" else "higher"
        return f"'{self.word}' means {better} is better"


def words(name: str) -> list[str]:
    """The words of a metric name: split at separators and camelCase, lower-cased."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def infer(name: str) -> Inferred | None:
    """The direction a metric's name says, or None when it says neither."""
    found: Inferred | None = None
    for word in words(name):
        if word in MAX_WORDS:
            found = Inferred("max", word)
        elif word in MIN_WORDS:
            found = Inferred("min", word)
    if found is not None:
        return found
    joined = "".join(words(name))
    hits = [(joined.rfind(w), w, d) for w, d in _EMBEDDED.items() if w in joined]
    if hits:
        _, word, direction = max(hits)
        return Inferred(direction, word)
    return None


def contradiction(name: str, direction: str) -> str | None:
    """A warning when ``direction`` was given against what the name says, else None."""
    said = infer(name)
    if said is None or said.direction == direction:
        return None
    return (f"--direction {direction} for the metric '{name}', but {said.why()}: arx will keep "
            f"changes that make it {'lower' if direction == 'min' else 'higher'}")
