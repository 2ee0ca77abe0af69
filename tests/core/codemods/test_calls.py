"""Call keywords, function defaults and store_true switches as settings (real libcst)."""

from __future__ import annotations

import pytest

from arx.core.codemods.common import excerpt
from arx.core.codemods.constants import apply_changes, discover_constants, scan_parameters
from arx.core.errors import PatchError

SCRIPT = '''\
import os
import torch
import torch.nn as nn
import torch.optim as optim
from sklearn.ensemble import HistGradientBoostingClassifier

clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, verbose=0)


def train(steps, lr=0.1, depth=3, warm=True, *, scale=2.0):
    cell = nn.LSTMCell(1, 51)
    a = nn.Linear(3, 4, bias=False)
    b = nn.Linear(3, 4, bias=True)
    opt = optim.LBFGS(cell.parameters(), lr=0.8, history_size=lr)
    os.makedirs("out", exist_ok=True)
    print("x", end="")
    return torch.sum(a(b), dim=1)


if __name__ == "__main__":
    train(10, depth=4)
'''


def _found(source):
    return {c.name: (c.value, c.surface) for c in discover_constants(source)}


def test_call_keywords_and_defaults_are_named_by_where_they_live():
    assert _found(SCRIPT) == {
        "HistGradientBoostingClassifier.max_iter": (100, "call"),
        "HistGradientBoostingClassifier.learning_rate": (0.1, "call"),
        "HistGradientBoostingClassifier.verbose": (0, "call"),
        "Linear#1.bias": (False, "call"), "Linear#2.bias": (True, "call"),  # same callee twice
        "LBFGS.lr": (0.8, "call"),
        "train.depth": (4, "call"),  # the call's keyword takes effect, not the default
        "train.lr": (0.1, "default"), "train.warm": (True, "default"),
        "train.scale": (2.0, "default"),
    }  # not: LSTMCell(1, 51) (positional), exist_ok, end, dim (code), history_size=lr
    reasons = {s.name: s.reason for s in scan_parameters(SCRIPT).skipped}
    assert reasons == {"train.depth": "the call at line 21 passes it, so that keyword is what "
                                      "takes effect and what arx tunes",
                       "clf": "not a literal (HistGradientBoostingClassifier(max_iter= ...)"}


def test_call_keyword_and_default_patches_touch_only_the_value():
    after = apply_changes(SCRIPT, {"LBFGS.lr": 0.5, "Linear#2.bias": False, "train.lr": 0.01,
                                   "train.depth": 2, "HistGradientBoostingClassifier.max_iter": 50})
    assert after == (SCRIPT.replace("lr=0.8", "lr=0.5").replace("4, bias=True", "4, bias=False")
                     .replace("lr=0.1, depth", "lr=0.01, depth").replace("depth=4)", "depth=2)")
                     .replace("max_iter=100", "max_iter=50"))
    assert apply_changes(SCRIPT, {}) == SCRIPT


def test_defaults_a_call_sometimes_passes_or_spreads_are_skipped():
    source = ("def f(lr=0.1, wd=0.0, n=int('3')):\n    return lr\n\n"
              "f(lr=0.2)\nf()\nf(*[1])\n\ndef g(x=1):\n    return x\n\ng(**{})\n"
              "def unused(y=2):\n    return y\n")
    scan = scan_parameters(source)
    assert [c.name for c in scan.found] == ["f.lr"]  # the keyword of the call f(lr=0.2)
    reasons = {s.name: s.reason for s in scan.skipped}
    assert reasons["f.lr"] == "called with *args/**kwargs at line 6"
    assert reasons["f.n"].startswith("default is not a literal (int(")
    assert reasons["f.wd"] == "called with *args/**kwargs at line 6"
    assert reasons["g.x"] == "called with *args/**kwargs at line 11"
    assert "unused.y" not in reasons  # never called here: not a setting of this script
    with pytest.raises(PatchError, match="f.wd .line 1. is not a parameter arx can rewrite"):
        apply_changes(source, {"f.wd": 0.1})


def test_a_call_keyword_never_takes_an_older_surface_name():
    source = ("from dataclasses import dataclass\n\n@dataclass\nclass Args:\n    lr: float = 0.1\n\n"
              "args = Args(lr=0.2)\n")
    scan = scan_parameters(source)
    assert [(c.name, c.value, c.surface) for c in scan.found] == [("Args.lr", 0.1, "field")]
    assert "named like the field setting at line 5" in scan.skipped[0].reason


STORE = '''\
import argparse
p = argparse.ArgumentParser()
p.add_argument("--tied", action="store_true", help="tie the weights")
p.add_argument(
    "--nesterov",
    action="store_false",
)
p.add_argument("--amp", action="store_true")
'''


def test_store_true_switches_are_bools_and_a_flip_writes_default():
    assert _found(STORE) == {"--tied": (False, "argparse"), "--nesterov": (True, "argparse"),
                             "--amp": (False, "argparse")}
    after = apply_changes(STORE, {"--tied": True, "--nesterov": False, "--amp": True})
    assert after == STORE.replace('"store_true", help', '"store_true", default=True, help') \
        .replace('"store_false",\n', '"store_false", default=False,\n') \
        .replace('"store_true")', '"store_true", default=True)')
    assert _found(after)["--tied"] == (True, "argparse")  # read back from the written default=
    again = apply_changes(after, {"--tied": False})  # now an ordinary default= rewrite
    assert again == after.replace("default=True, help", "default=False, help")


@pytest.mark.parametrize(("code", "cut"), [
    ("torch.optim.AdamW(model.parameters(), lr=args.learning_rate)",
     "torch.optim.AdamW(model.parameters(), ..."),
    ("short(x)", "short(x)"),
    ("a_very_long_single_identifier_without_any_boundary_whatsoever_at_all",
     "a_very_long_single_identifier_without_any_boundary_whatsoever_at_all"),
])
def test_excerpts_are_never_cut_mid_token(code, cut):
    assert excerpt(code) == cut


def test_a_default_some_calls_pass_is_skipped_saying_so():
    source = "def h(a=1, b=2):\n    return a\n\nh(a=3)\nh()\n"
    reasons = {s.name: s.reason for s in scan_parameters(source).skipped}
    assert reasons == {"h.a": "the call at line 4 passes it and another does not"}
    assert _found(source) == {"h.a": (3, "call"), "h.b": (2, "default")}


def test_reads_under_a_condition_on_another_option_are_named():
    source = ('import argparse\np = argparse.ArgumentParser()\n'
              'p.add_argument("--model", default="LSTM")\np.add_argument("--nhead", default=2)\n'
              'p.add_argument("--nhid", default=8)\nargs = p.parse_args()\n'
              'if args.model == "Transformer":\n    x = args.nhead * args.nhid\n'
              'elif args.model in ("GRU", "RNN"):\n    x = args.nhid\nelse:\n    x = 1\n'
              'y = args.nhid if args.model != "LSTM" else 0\n')
    guards = scan_parameters(source).guards
    (nhead,) = guards["--nhead"]
    assert [c.describe() for c in nhead] == ["--model is 'Transformer' (line 7)"]
    assert not nhead[0].met_by("LSTM") and nhead[0].met_by("Transformer")
    reads = [[c.describe() for c in conds] for conds in guards["--nhid"]]
    assert reads == [["--model is 'Transformer' (line 7)"],
                     ["--model is not 'Transformer' (line 7)",
                      "--model is one of 'GRU', 'RNN' (line 9)"],
                     ["--model is not 'LSTM' (line 13)"]]


def test_a_trainer_call_s_device_length_and_checkpoint_keywords_are_locked_by_rule():
    from arx.core.loop.lockrules import lock_reason
    source = ('import lightning as L\ntrainer = L.Trainer(max_epochs=3, accelerator="cpu", '
              'devices=1, enable_checkpointing=False, accumulate_grad_batches=4)\n')
    reasons = {c.name: lock_reason(c.name) for c in discover_constants(source)}
    assert reasons == {
        "Trainer.max_epochs": "training length: a shorter run would win by training less",
        "Trainer.accelerator": "device (the name says 'accelerator')",
        "Trainer.devices": "device (the name says 'devices')",
        "Trainer.enable_checkpointing": "checkpointing (the name says 'checkpointing')",
        "Trainer.accumulate_grad_batches": None}
    assert lock_reason("--accel") == "device (the name says 'accel')"
    assert lock_reason("HistGradientBoostingClassifier.max_leaf_nodes") is None  # tree leaves, not machines


def test_calls_inside_a_class_are_its_internals_not_settings():
    source = ("import torch.nn as nn\nimport torch.optim as optim\n\n\n"
              "def orthogonalise(g, steps=5):\n    return g\n\n\n"
              "class Block(nn.Module):\n    def __init__(self):\n"
              "        self.proj = nn.Linear(8, 8, bias=False)\n\n"
              "    def step(self, g):\n        return orthogonalise(g)\n\n\n"
              "opt = optim.AdamW([], lr=0.01, eps=1e-8)\n")
    scan = scan_parameters(source)
    assert [c.name for c in scan.found] == ["AdamW.lr", "AdamW.eps"]
    (skip,) = [s for s in scan.skipped if s.name == "orthogonalise.steps"]
    assert "called from inside a class" in skip.reason
