"""Config surfaces beyond top-level constants: argparse, class fields, dict entries (real libcst)."""

from __future__ import annotations

import pytest

from arx.core.codemods.constants import apply_changes, discover_constants, scan_parameters
from arx.core.errors import PatchError

ARGPARSE = '''\
import argparse

def get_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1, help="learning rate")
    parser.add_argument("--batch-size", type=int, default=64)  # per device
    parser.add_argument("-o", "--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--epochs", type=int, default=int("3"))
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(seed=2)
    parser.add_argument("data")
    return parser.parse_args()
'''


def _found(source):
    return {c.name: (c.value, c.kind, c.surface) for c in discover_constants(source)}


def test_argparse_defaults_by_long_option():
    found = _found(ARGPARSE)
    assert found == {"--lr": (1.0, "float", "argparse"), "--batch-size": (64, "int", "argparse"),
                     "--optimizer": ("adam", "str", "argparse"),
                     "--dry-run": (False, "bool", "argparse"),
                     "--gamma": (0.7, "float", "argparse")}
    scan = scan_parameters(ARGPARSE)
    by_name = {c.name: c for c in scan.found}
    assert by_name["--lr"].comment == "learning rate"
    assert by_name["--optimizer"].choices == ("adam", "sgd")
    reasons = {s.name: s.reason for s in scan.skipped}
    assert "not a literal" in reasons["--epochs"]
    assert "set_defaults" in reasons["--seed"]


def test_argparse_patch_touches_only_the_default():
    after = apply_changes(ARGPARSE, {"--lr": 0.5, "--batch-size": 32, "--optimizer": "sgd"})
    assert after == ARGPARSE.replace("default=1, help", "default=0.5, help").replace(
        "default=64)", "default=32)").replace('default="adam"', 'default="sgd"')
    assert apply_changes(ARGPARSE, {"--lr": 1.0}) != ARGPARSE  # 1 -> 1.0: a float now
    assert apply_changes(ARGPARSE, {}) == ARGPARSE


def test_argparse_defined_twice_is_refused():
    source = ('import argparse\na = argparse.ArgumentParser()\nb = argparse.ArgumentParser()\n'
              'a.add_argument("--lr", default=0.1)\nb.add_argument("--lr", default=0.2)\n')
    assert _found(source) == {}
    with pytest.raises(PatchError, match="defined 2 times"):
        apply_changes(source, {"--lr": 0.3})


FIELDS = '''\
from dataclasses import dataclass, field
import attr


@dataclass
class Args:
    """Training settings."""
    exp_name: str = "ppo"
    learning_rate: float = 2.5e-4  # Adam
    num_envs: int = 4
    anneal_lr: bool = True
    clip_coef: float = 1
    hidden: tuple = field(default=(64, 64))
    tags: list = field(default_factory=list)

    def total(self):
        return self.num_envs * 2


@attr.s
class Opt:
    beta = attr.ib(default=0.9)


class Plain:
    depth = 3
    depth = 4
    width = 8


class Model:
    width = 128

    def forward(self):
        return self.width
'''


def test_config_class_fields():
    assert _found(FIELDS) == {
        "Args.exp_name": ("ppo", "str", "field"),
        "Args.learning_rate": (2.5e-4, "float", "field"),
        "Args.num_envs": (4, "int", "field"), "Args.anneal_lr": (True, "bool", "field"),
        "Args.clip_coef": (1.0, "float", "field"), "Args.hidden": ((64, 64), "tuple", "field"),
        "Opt.beta": (0.9, "float", "field"), "Plain.width": (8, "int", "field"),
    }
    scan = scan_parameters(FIELDS)
    assert {s.name: s.reason for s in scan.skipped}["Plain.depth"] == "assigned 2 times in the class"
    assert next(c for c in scan.found if c.name == "Args.learning_rate").comment == "Adam"


def test_class_field_patch():
    after = apply_changes(FIELDS, {"Args.learning_rate": 1e-3, "Args.hidden": (32, 32),
                                   "Opt.beta": 0.95, "Args.clip_coef": 0.5})
    assert after == FIELDS.replace("2.5e-4", "1e-3").replace("(64, 64)", "(32, 32)").replace(
        "default=0.9", "default=0.95").replace("clip_coef: float = 1", "clip_coef: float = 0.5")


DICTS = '''\
import lightgbm

params = {
    "n_estimators": 500,
    "max_depth": 4,
    "learning_rate": 0.01,
    "loss": "squared_error",
    "extra": {"subsample": 0.8},
}
config = dict(lr=3e-4, n_layer=2, **overrides)
config2 = dict(**overrides, wd=0.1)
twice = {"a": 1}
twice = {"a": 2}
changed = {"a": 1, "b": 2}
changed["a"] = 5
updated = {"a": 1}
updated.update(a=2)


def main():
    local = {"x": 1}
    return local
'''


def test_dict_entries():
    assert _found(DICTS) == {
        "params.n_estimators": (500, "int", "dict"), "params.max_depth": (4, "int", "dict"),
        "params.learning_rate": (0.01, "float", "dict"),
        "params.loss": ("squared_error", "str", "dict"),
        "params.extra.subsample": (0.8, "float", "dict"), "config2.wd": (0.1, "float", "dict"),
        "changed.b": (2, "int", "dict"),
    }
    reasons = {s.name: s.reason for s in scan_parameters(DICTS).skipped}
    assert "spread" in reasons["config.lr"]
    assert "assigned 2 times" in reasons["twice.a"]
    assert "assigned again" in reasons["changed.a"]
    assert "updated.update" in reasons["updated.a"]


def test_dict_patch():
    after = apply_changes(DICTS, {"params.max_depth": 6, "params.extra.subsample": 0.5,
                                  "config2.wd": 0.01})
    assert after == DICTS.replace('"max_depth": 4', '"max_depth": 6').replace(
        '"subsample": 0.8', '"subsample": 0.5').replace("wd=0.1", "wd=0.01")
    with pytest.raises(PatchError, match="spread"):
        apply_changes(DICTS, {"config.lr": 1e-3})
    with pytest.raises(PatchError, match="did you mean params.max_depth"):
        apply_changes(DICTS, {"params.max_dept": 1})


def test_mixed_script_keeps_names_apart_and_round_trips():
    source = ("LR = 0.1\nparams = {'LR': 0.2}\n"
              "import argparse\np = argparse.ArgumentParser()\np.add_argument('--LR', default=0.3)\n"
              "class C:\n    LR = 0.4\n")
    assert {c.name: c.value for c in discover_constants(source)} == {
        "LR": 0.1, "--LR": 0.3, "C.LR": 0.4, "params.LR": 0.2}
    after = apply_changes(source, {"LR": 1.0, "--LR": 3.0, "C.LR": 4.0, "params.LR": 2.0})
    assert {c.name: c.value for c in discover_constants(after)} == {
        "LR": 1.0, "--LR": 3.0, "C.LR": 4.0, "params.LR": 2.0}


def test_config_sources_are_named():
    source = ("import yaml, os\ncfg = yaml.safe_load(open('c.yaml'))\n"
              "lr = float(os.environ.get('LR', '0.1'))\nexec(open('configurator.py').read())\n")
    scan = scan_parameters(source)
    assert scan.found == ()
    text = " | ".join(scan.sources)
    assert "a YAML file (yaml.safe_load) at line 2" in text
    assert "environment variables" in text and "configurator" in text
    assert {s.name for s in scan.skipped} == {"cfg", "lr"}
