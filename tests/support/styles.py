"""Small training scripts in the styles users bring (argparse, dataclass, dict literal,
``dict(...)``, mixed, data git does not track, call keywords, store_true switches, function
defaults, a local config module imported by train.py, a YAML file train.py reads, or a
TOML/JSON config file as the target). Each "trains"
in milliseconds: its metric is a formula of its defaults, the defaults are far from the
optimum, so a short offline run finds a change that wins. ``EXPECTED`` says what ``arx init``
should make tunable and lock."""

from __future__ import annotations

FOOTER = '''
    print("---")
    print(f"loss: {loss:.6f}")
'''

ARGPARSE = '''"""A PyTorch-examples-style script: every setting is an argparse flag."""
import argparse
import math


def main():
    parser = argparse.ArgumentParser(description="toy MNIST")
    parser.add_argument("--batch-size", type=int, default=64, help="input batch size")
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs to train")
    parser.add_argument("--lr", type=float, default=1.0, help="learning rate")
    parser.add_argument("--gamma", type=float, default=0.5, help="LR step gamma")
    parser.add_argument("--no-cuda", action="store_true", default=False)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--save-model", action="store_true", default=False)
    args = parser.parse_args()
    loss = (1.0 + 0.5 * abs(math.log10(args.lr) - math.log10(0.05))
            + 0.3 * abs(args.gamma - 0.9) + 0.002 * abs(args.batch_size - 32))
''' + FOOTER + '''

if __name__ == "__main__":
    main()
'''

DATACLASS = '''"""A CleanRL/tyro-style script: a dataclass of settings."""
import math
from dataclasses import dataclass


@dataclass
class Args:
    exp_name: str = "ppo"
    seed: int = 1
    torch_deterministic: bool = True
    cuda: bool = True
    track: bool = False
    wandb_project_name: str = "cleanRL"
    total_timesteps: int = 500000
    learning_rate: float = 2.5e-2  # the optimizer's
    num_envs: int = 16
    gamma: float = 0.5
    clip_coef: float = 0.2


def main():
    args = Args()
    loss = (1.0 + 0.5 * abs(math.log10(args.learning_rate) - math.log10(2.5e-4))
            + 0.02 * abs(args.num_envs - 4) + 0.3 * abs(args.gamma - 0.99)
            + 0.1 * abs(args.clip_coef - 0.1))
''' + FOOTER + '''

main()
'''

DICT = '''"""A scikit-learn-style script: the estimator's parameters in a dict."""
import math

params = {
    "n_estimators": 50,
    "max_depth": 8,
    "min_samples_split": 5,
    "learning_rate": 0.5,
    "loss": "squared_error",
    "random_state": 0,
    "verbose": 0,
}


def main():
    p = params
    loss = (1.0 + 0.2 * abs(math.log10(p["n_estimators"]) - math.log10(500))
            + 0.05 * abs(p["max_depth"] - 4) + 0.01 * abs(p["min_samples_split"] - 5)
            + 0.5 * abs(math.log10(p["learning_rate"]) - math.log10(0.01)))
''' + FOOTER + '''

main()
'''

DICT_CALL = '''"""A nanoGPT-style config as a dict(...) call."""
import math

config = dict(
    learning_rate=6e-2,
    n_layer=12,
    n_head=4,
    n_embd=64,
    dropout=0.5,
    eval_interval=100,
    wandb_log=False,
    max_iters=50,
)


def main():
    c = config
    assert c["n_embd"] % c["n_head"] == 0, "n_embd must be divisible by n_head"
    loss = (1.0 + 0.5 * abs(math.log10(c["learning_rate"]) - math.log10(6e-4))
            + 0.02 * abs(c["n_layer"] - 4) + 0.3 * abs(c["dropout"] - 0.0)
            + 0.001 * abs(c["n_embd"] - 128))
''' + FOOTER + '''

main()
'''

MIXED = '''"""Constants, a dict and argparse in one script."""
import argparse
import math

SEED = 0
LR = 0.5  # learning rate
optim = {"weight_decay": 0.5, "eps": 1e-8}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--out-dir", default="out")
    args = parser.parse_args()
    loss = (1.0 + 0.5 * abs(math.log10(LR) - math.log10(0.01))
            + 0.3 * abs(optim["weight_decay"] - 0.05) + 0.02 * abs(args.depth - 4))
''' + FOOTER + '''

main()
'''

DATA = '''"""A script reading data that git does not track (data/ is in .gitignore)."""
import math
import os

DATA_DIR = os.path.join("data", "toy")
LR = 0.5
DEPTH = 12


def main():
    with open(os.path.join(DATA_DIR, "train.txt")) as fh:
        offset = float(fh.read())
    loss = offset + 0.5 * abs(math.log10(LR) - math.log10(0.01)) + 0.02 * abs(DEPTH - 4)
''' + FOOTER + '''

main()
'''

LBFGS = '''"""A time_sequence_prediction-like script (pytorch/examples): an LSTM fitted with LBFGS,
its settings written inline in the calls. Two tiny classes stand in for torch."""
import math
from types import SimpleNamespace


class _Cell:
    def __init__(self, n_in, n_hidden):
        self.hidden = n_hidden


class _LBFGS:
    def __init__(self, params, lr=1, history_size=100):
        self.lr, self.history_size = lr, history_size


nn = SimpleNamespace(LSTMCell=_Cell)
optim = SimpleNamespace(LBFGS=_LBFGS)


def main():
    lstm1 = nn.LSTMCell(1, 51)
    lstm2 = nn.LSTMCell(51, 51)
    optimizer = optim.LBFGS([lstm1, lstm2], lr=0.8, history_size=100)
    loss = (1.0 + 0.5 * abs(math.log10(optimizer.lr) - math.log10(0.05))
            + 0.2 * abs(math.log10(optimizer.history_size) - 1) + 0.001 * lstm2.hidden)
''' + FOOTER + '''

if __name__ == "__main__":
    main()
'''

ESTIMATOR = '''"""A scikit-learn-docs-style script: the estimator's settings written in its call."""
import math


class HistGradientBoostingClassifier:  # stands in for sklearn.ensemble's
    def __init__(self, **params):
        self.params = params

    def fit(self, X, y):
        return self


clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.5, max_leaf_nodes=31,
                                     random_state=0, verbose=0)
clf.fit([[0.0]], [0])
p = clf.params
loss = (1.0 + 0.5 * abs(math.log10(p["learning_rate"]) - math.log10(0.05))
        + 0.2 * abs(math.log10(p["max_iter"]) - 3) + 0.005 * abs(p["max_leaf_nodes"] - 15))
print("---")
print(f"loss: {loss:.6f}")
'''

WORD_LM = '''"""A word_language_model-like script (pytorch/examples): argparse with store_true switches,
an accelerator switch and a Transformer-only option."""
import argparse
import math


def main():
    parser = argparse.ArgumentParser(description="toy word language model")
    parser.add_argument("--model", type=str, default="LSTM",
                        help="type of network (RNN_TANH, RNN_RELU, LSTM, GRU, Transformer)")
    parser.add_argument("--emsize", type=int, default=200, help="size of word embeddings")
    parser.add_argument("--nlayers", type=int, default=2, help="number of layers")
    parser.add_argument("--lr", type=float, default=20, help="initial learning rate")
    parser.add_argument("--epochs", type=int, default=40, help="upper epoch limit")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--tied", action="store_true",
                        help="tie the word embedding and softmax weights")
    parser.add_argument("--seed", type=int, default=1111, help="random seed")
    parser.add_argument("--accel", action="store_true", help="Enables accelerated training")
    parser.add_argument("--log-interval", type=int, default=200, metavar="N")
    parser.add_argument("--nhead", type=int, default=2,
                        help="the number of heads in the encoder/decoder of the transformer")
    args = parser.parse_args()
    if args.model == "Transformer":
        width = args.emsize * args.nhead
    else:
        width = args.emsize
    loss = (1.0 + 0.5 * abs(math.log10(args.lr) - math.log10(2)) + 0.001 * abs(width - 200)
            + 0.05 * abs(args.nlayers - 2) + (0.0 if args.tied else 0.1))
''' + FOOTER + '''

if __name__ == "__main__":
    main()
'''

MAIN_DEFAULTS = '''"""A script whose settings are the defaults of its main function."""
import math


def main(lr=0.5, max_depth=12, l2=1.0, seed=0):
    loss = (1.0 + 0.5 * abs(math.log10(lr) - math.log10(0.01)) + 0.02 * abs(max_depth - 4)
            + 0.1 * abs(math.log10(l2) + 1))
''' + FOOTER + '''

if __name__ == "__main__":
    main()
'''

_CONFIG_SCRIPT = '''"""A Lightning/Hydra-style script: its settings live in {path}, read with {how}."""
import math
{imports}

with open("{path}"{mode}) as f:
    cfg = {load}(f)
o, m = cfg["optim"], cfg["model"]
loss = (1.0 + 0.5 * abs(math.log10(o["lr"]) - math.log10(0.01))
        + 0.3 * abs(o["weight_decay"] - 0.05) + 0.02 * abs(m["depth"] - 4))
print("---")
print(f"loss: {{loss:.6f}}")
'''

YAML_CONFIG = """\
# the primary config (Hydra style)
defaults:
  - _self_
trainer:
  max_epochs: 3          # how long (locked: a shorter run would win)
  accelerator: cpu
  log_every_n_steps: 10
optim:
  lr: 0.5                # the optimizer's learning rate
  weight_decay: 5.0e-1   # decoupled
model:
    depth: 12            # layers
    activation: relu
seed: 0
"""

TOML_CONFIG = """\
# settings of train.py
seed = 0

[optim]
lr = 0.5  # learning rate
weight_decay = 0.5

[model]
depth = 12  # layers
"""

JSON_CONFIG = """\
{
  "seed": 0,
  "optim": {
    "lr": 0.5,
    "weight_decay": 0.5
  },
  "model": {
    "depth": 12,
    "verbose": false
  }
}
"""

#: style -> {path: text} for a style whose settings are not in train.py, and its --target
FILES = {
    "yaml": {"train.py": _CONFIG_SCRIPT.format(path="conf/config.yaml", how="yaml.safe_load",
                                               imports="import yaml", mode="",
                                               load="yaml.safe_load"),
             "conf/config.yaml": YAML_CONFIG},
    "toml": {"train.py": _CONFIG_SCRIPT.format(path="config.toml", how="tomllib",
                                               imports="import tomllib", mode=', "rb"',
                                               load="tomllib.load"),
             "config.toml": TOML_CONFIG},
    "module": {"train.py": '''"""A script whose settings live in config.py, its own module."""
import math

import config
from config import LR

loss = (1.0 + 0.5 * abs(math.log10(LR) - math.log10(0.01))
        + 0.02 * abs(config.DEPTH - 4))
print("---")
print(f"loss: {loss:.6f}")
''',
               "config.py": 'LR = 0.5  # learning rate\nDEPTH = 12\nSEED = 0\n'},
    "json": {"train.py": _CONFIG_SCRIPT.format(path="config.json", how="json.load",
                                               imports="import json", mode="", load="json.load"),
             "config.json": JSON_CONFIG},
}
#: the styles adopted as ``--target train.py`` whose settings live in other files: init
#: finds the file (an imported module, a loader call's path) and adds it to [target] files
JOINED = {"yaml": ["conf/config.yaml"], "module": ["config.py"], "toml": ["config.toml"]}
#: the style adopted as ``--target FILE``: the config file itself is the target
TARGETS = {"json": "config.json"}

STYLES = {"argparse": ARGPARSE, "dataclass": DATACLASS, "dict": DICT, "dict_call": DICT_CALL,
          "mixed": MIXED, "data": DATA, "lbfgs": LBFGS, "estimator": ESTIMATOR,
          "word_lm": WORD_LM, "main_defaults": MAIN_DEFAULTS,
          **{style: files["train.py"] for style, files in FILES.items()}}

#: style -> (tunable names, locked names)
EXPECTED = {
    "argparse": ({"--batch-size", "--lr", "--gamma"},
                 {"--test-batch-size", "--epochs", "--no-cuda", "--seed", "--log-interval",
                  "--save-model"}),
    "dataclass": ({"Args.learning_rate", "Args.num_envs", "Args.gamma", "Args.clip_coef"},
                  {"Args.exp_name", "Args.seed", "Args.torch_deterministic", "Args.cuda",
                   "Args.track", "Args.wandb_project_name", "Args.total_timesteps"}),
    "dict": ({"params.n_estimators", "params.max_depth", "params.min_samples_split",
              "params.learning_rate"}, {"params.random_state", "params.verbose"}),
    "dict_call": ({"config.learning_rate", "config.n_layer", "config.n_head", "config.n_embd",
                   "config.dropout"},
                  {"config.eval_interval", "config.wandb_log", "config.max_iters"}),
    "mixed": ({"LR", "optim.weight_decay", "optim.eps", "--depth"}, {"SEED", "--out-dir"}),
    "data": ({"LR", "DEPTH"}, set()),
    "lbfgs": ({"LBFGS.lr", "LBFGS.history_size"}, set()),  # LSTMCell(1, 51): positional
    "estimator": ({"HistGradientBoostingClassifier.max_iter",
                   "HistGradientBoostingClassifier.learning_rate",
                   "HistGradientBoostingClassifier.max_leaf_nodes"},
                  {"HistGradientBoostingClassifier.random_state",
                   "HistGradientBoostingClassifier.verbose"}),
    "word_lm": ({"--emsize", "--nlayers", "--lr", "--dropout", "--tied"},
                {"--epochs", "--seed", "--accel", "--log-interval", "--nhead"}),
    "main_defaults": ({"main.lr", "main.max_depth", "main.l2"}, {"main.seed"}),
    "yaml": ({"conf/config.yaml:optim.lr", "conf/config.yaml:optim.weight_decay",
              "conf/config.yaml:model.depth"},
             {"conf/config.yaml:trainer.max_epochs", "conf/config.yaml:trainer.accelerator",
              "conf/config.yaml:trainer.log_every_n_steps", "conf/config.yaml:seed"}),
    "toml": ({"config.toml:optim.lr", "config.toml:optim.weight_decay",
              "config.toml:model.depth"}, {"config.toml:seed"}),
    "json": ({"optim.lr", "optim.weight_decay", "model.depth"}, {"seed", "model.verbose"}),
    "module": ({"config.py:LR", "config.py:DEPTH"}, {"config.py:SEED"}),
}
