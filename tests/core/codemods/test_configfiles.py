"""Config files as the target: YAML (ruamel.yaml node spans), TOML (tomlkit), JSON."""

from __future__ import annotations

import json

import pytest
import yaml

from arx.core.codemods.constants import apply_changes, discover_constants, scan_parameters
from arx.core.errors import PatchError

YAML = """\
# Hydra-style primary config
defaults:
  - _self_
optim:
  lr: 0.5   # the optimizer's
  wd: 1.0e-2
  betas: [0.9, 0.95]
  eps: 1e-8
model:
    depth: 12
    name: "mlp"
    act: relu
flag: yes
none: null
base: &b
  x: 1
"""


def test_yaml_settings_are_named_by_path_and_what_yaml_readers_disagree_on_is_skipped():
    scan = scan_parameters(YAML, "conf/config.yaml")
    assert {c.name: (c.value, c.line) for c in scan.found} == {
        "optim.lr": (0.5, 5), "optim.wd": (0.01, 6), "optim.betas": ([0.9, 0.95], 7),
        "model.depth": (12, 10), "model.name": ("mlp", 11), "model.act": ("relu", 12),
        "none": (None, 14)}
    reasons = {s.name: s.reason for s in scan.skipped}
    assert reasons["optim.eps"].startswith("YAML 1.1 (PyYAML) reads it as '1e-8'")
    assert reasons["flag"].startswith("YAML 1.1 (PyYAML) reads it as True")
    assert "Hydra's defaults list" in reasons["defaults"]
    assert reasons["base"] == "anchored (&b): other keys refer to it"


def test_a_yaml_edit_writes_only_the_value_and_both_readers_agree():
    after = apply_changes(YAML, {"optim.lr": 1e-5, "model.depth": 4, "model.name": "cnn",
                                 "model.act": "gelu x", "optim.betas": [0.8, 0.99]},
                          "conf/config.yaml")
    assert after == (YAML.replace("lr: 0.5   #", "lr: 1.0e-05   #")
                     .replace("depth: 12", "depth: 4").replace('"mlp"', '"cnn"')
                     .replace("act: relu", 'act: "gelu x"')
                     .replace("[0.9, 0.95]", "[0.8, 0.99]"))
    assert yaml.safe_load(after)["optim"]["lr"] == 1e-5  # PyYAML reads a float, not '1e-05'
    with pytest.raises(PatchError, match="optim.eps is not a setting .* YAML 1.1"):
        apply_changes(YAML, {"optim.eps": 1e-7}, "conf/config.yaml")
    with pytest.raises(PatchError, match="did you mean optim.lr"):
        apply_changes(YAML, {"optim.lrr": 1e-7}, "conf/config.yaml")
    assert apply_changes(YAML, {}, "c.yaml") == YAML


TOML = "# top\nlr = 0.5  # the lr\n\n[optim]\nwd = 1e-2 # wd\nwhen = 1979-05-27\n"


def test_toml_keeps_comments_and_layout():
    scan = scan_parameters(TOML, "config.toml")
    assert {c.name: (c.value, c.line) for c in scan.found} == {"lr": (0.5, 2),
                                                               "optim.wd": (0.01, 5)}
    assert scan.skipped[0].name == "optim.when"  # a date is not a value arx writes
    after = apply_changes(TOML, {"optim.wd": 0.25, "lr": 1e-5}, "config.toml")
    assert after == TOML.replace("lr = 0.5", "lr = 1e-05").replace("wd = 1e-2", "wd = 0.25")


def test_json_is_rewritten_in_its_own_indentation():
    source = json.dumps({"lr": 0.5, "optim": {"wd": 0.01, "name": "adamw"}}, indent=2) + "\n"
    assert [c.name for c in discover_constants(source, "c.json")] == ["lr", "optim.wd",
                                                                      "optim.name"]
    after = apply_changes(source, {"optim.wd": 0.25}, "c.json")
    assert after == source.replace("0.01", "0.25")
    with pytest.raises(PatchError, match="does not parse .line 1."):
        scan_parameters("{", "c.json")
