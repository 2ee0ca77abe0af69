"""Resolution of one run's settings: flag > ARX_* environment > arx.toml > default."""

from __future__ import annotations

import json

import pytest
import tomlkit

from arx.core.config import RunConfig, resolve
from arx.core.errors import ConfigError

DOC = tomlkit.parse("""
[target]
file = "train.py"
budget_constant = "TIME_BUDGET"
steps_constant = "TRAIN_STEPS"
[run]
iterations = 12
budget = 20
seed = 3
""")


def test_precedence_flag_env_toml_default():
    env = {"ARX_ITERATIONS": "7", "ARX_SEED": "5"}
    config = resolve("r", DOC, {"seed": 9}, env)
    assert config.seed == 9 and config.sources["seed"] == "flag"
    assert config.iterations == 7 and config.sources["iterations"] == "$ARX_ITERATIONS"
    assert config.budget == 20.0 and config.sources["budget"] == "[run]"
    assert config.confirm == 0 and config.sources["confirm"] == "default"


def test_round_trip_through_json():
    config = resolve("r", DOC, {}, {})
    again = RunConfig.from_json(config.to_json())
    assert again == config and again.target == config.target


@pytest.mark.parametrize("flags, env, message", [
    ({"budget": 10, "steps": 5}, {}, "both set"),
    ({}, {"ARX_ITERATIONS": "many"}, "$ARX_ITERATIONS"),
    ({"group": "Z"}, {}, "--group"),
    ({"budget": -1}, {}, "positive"),
    ({}, {"ARX_STEP_ASIDE": "maybe"}, "step_aside from $ARX_STEP_ASIDE must be true or false"),
])
def test_bad_settings_name_their_source(flags, env, message):
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        resolve("r", DOC, flags, env)


def test_unknown_keys_are_refused():
    doc = tomlkit.parse("[run]\niteratons = 3\n")
    with pytest.raises(ConfigError, match="iteratons"):
        resolve("r", doc, {}, {})
    doc = tomlkit.parse("[target]\ncomand = 'x'\n")
    with pytest.raises(ConfigError, match="comand"):
        resolve("r", doc, {}, {})


def test_budget_without_a_budget_constant_says_what_to_add():
    doc = tomlkit.parse("[target]\nfile = 'x.py'\n")
    with pytest.raises(ConfigError) as info:
        resolve("r", doc, {"budget": 5}, {})
    assert "budget_constant" in str(info.value)


def test_step_aside_reads_words_as_booleans_and_a_stored_config_without_it_reads_true():
    assert resolve("r", DOC, {}, {}).step_aside is True
    assert resolve("r", DOC, {}, {"ARX_STEP_ASIDE": "false"}).step_aside is False
    doc = tomlkit.parse(DOC.as_string() + "[levels]\nstep_aside = false\n")
    assert resolve("r", doc, {}, {}).step_aside is False
    assert resolve("r", doc, {}, {"ARX_STEP_ASIDE": "1"}).step_aside is True
    stored = json.loads(resolve("r", DOC, {}, {}).to_json())
    stored.pop("step_aside")
    assert RunConfig.from_json(json.dumps(stored)).step_aside is True  # used from rules 4 only


def test_target_files_default_empty_and_are_checked():
    assert resolve("r", {}, {}, env={}).target.files == ()
    doc = {"target": {"file": "train.py", "files": ["config.py", "conf/c.yaml"]}}
    config = resolve("r", doc, {}, env={})
    assert config.target.paths() == ("train.py", "config.py", "conf/c.yaml")
    assert RunConfig.from_json(config.to_json()).target.files == ("config.py", "conf/c.yaml")
    for files, message in ((["../x.py"], "repo-relative"), ([1], "repo-relative"),
                           (["train.py"], "twice"), (["a.py", "a.py"], "twice")):
        with pytest.raises(ConfigError, match=message):
            resolve("r", {"target": {"files": files}}, {}, env={})
