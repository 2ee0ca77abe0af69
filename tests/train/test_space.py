"""train/space.toml: covers every constant, locks the budget and seed, and only holds valid configs."""

import itertools

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest

from arx.train import prepare as prep


@pytest.fixture(scope="module")
def space(train_dir):
    with open(train_dir / "space.toml", "rb") as f:
        return tomllib.load(f)["params"]


@pytest.fixture(scope="module")
def constants(train_dir):
    codemods = pytest.importorskip("arx.core.codemods.constants")
    return codemods.discover_constants((train_dir / "train.py").read_text())


def test_every_constant_is_locked_or_ranged_and_budget_and_seed_are_locked(space, constants):
    names = {c.name for c in constants}
    locked = set(space["locked"])
    ranged = set(space) - {"locked"}
    assert {"SEED", "TIME_BUDGET", "TRAIN_STEPS"} <= locked
    assert not locked & ranged
    assert locked | ranged == names


def test_the_space_loads_in_arx_and_holds_the_defaults(space, constants):
    space_mod = pytest.importorskip("arx.core.loop.space")
    ps = space_mod.ParameterSpace.from_toml(space, constants)
    for c in constants:
        assert ps.specs[c.name].contains(c.value), f"default {c.name} = {c.value!r} out of range"


def config_corners(space, constants):
    """Every combination of each ranged int's extremes / each choice, with the locked defaults."""
    values = {c.name: c.value for c in constants}
    axes = {}
    for name in ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "WINDOW_PATTERN"):
        entry = space[name]
        axes[name] = entry["choices"] if "choices" in entry else [entry["low"], entry["high"]]
    for combo in itertools.product(*axes.values()):
        yield {**values, **dict(zip(axes, combo))}


def test_every_corner_of_the_space_is_a_valid_shape(space, constants):
    for cfg in config_corners(space, constants):
        width = (cfg["DEPTH"] * cfg["ASPECT_RATIO"] + cfg["HEAD_DIM"] - 1) \
            // cfg["HEAD_DIM"] * cfg["HEAD_DIM"]
        assert width % cfg["HEAD_DIM"] == 0 and cfg["HEAD_DIM"] % 2 == 0  # heads, rotary pairs
        device_batch = max(1, min(cfg["DEVICE_BATCH_SIZE"],
                                  cfg["TOTAL_BATCH_SIZE"] // cfg["MAX_SEQ_LEN"]))
        assert cfg["TOTAL_BATCH_SIZE"] % (device_batch * cfg["MAX_SEQ_LEN"]) == 0, cfg
        assert cfg["MAX_SEQ_LEN"] < prep.EVAL_TOKENS


@pytest.mark.slow
@pytest.mark.parametrize("corner", ["low", "high"])
def test_the_extreme_corners_train(space, run_train, summary_of, corner):
    """One step at every range's low end (or high end), with the defaults of the locked constants.

    The batch goes the other way (high with the small model, low with the big one): which batch
    sizes divide is checked for all corners above, and this keeps the big model's step cheap."""
    pick = 0 if corner == "low" else -1
    overrides = {"TRAIN_STEPS": "1", "MAX_SEQ_LEN": "128", "DEVICE_BATCH_SIZE": "32"}
    for name, entry in space.items():
        if name == "locked":
            continue
        end = -1 - pick if name == "TOTAL_BATCH_SIZE" else pick
        if "choices" in entry:
            value = entry["choices"][end]
            overrides[name] = repr(tuple(value) if isinstance(value, list) else value)
        else:
            overrides[name] = repr([entry["low"], entry["high"]][end])
    proc = run_train(**overrides)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary_of(proc.stdout)["num_steps"] == "1"
