"""arx.core.loop.space: the space of all parameters, proposal validation, [params] in arx.toml."""

from __future__ import annotations

import sys

import pytest
import tomlkit

from arx.core.codemods.constants import Constant, apply_changes, discover_constants
from arx.core.errors import ConfigError, ProposalError
from arx.core.loop.params import ParamSpec, infer_spec
from arx.core.loop.space import ParameterSpace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SOURCE = """\
DEPTH = 6
ASPECT_RATIO = 64
MATRIX_LR = 0.04
TOTAL_BATCH_SIZE = 2**12
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.0
WINDOW_PATTERN = "SL"
ADAM_BETAS = (0.8, 0.95)
USE_BIAS = True
SEED = 0
CLIP = None
"""
CONSTANTS = discover_constants(SOURCE)
CURRENT = {c.name: c.value for c in CONSTANTS}


def const(name: str, value: object) -> Constant:
    (c,) = discover_constants(f"{name} = {value!r}\n")
    return c


@pytest.fixture
def space() -> ParameterSpace:
    return ParameterSpace.from_constants(CONSTANTS)


def test_describe_and_tunable(space):
    assert space.specs["MATRIX_LR"].describe() == "MATRIX_LR float in [0.004, 0.4] log"
    assert space.specs["TOTAL_BATCH_SIZE"].describe() == (
        "TOTAL_BATCH_SIZE int in [512, 32768] power of two"
    )
    assert space.specs["USE_BIAS"].describe() == "USE_BIAS one of False, True"
    fixed = space.specs["WINDOW_PATTERN"].describe()
    assert fixed.startswith("WINDOW_PATTERN str fixed at 'SL'")
    assert "[params.WINDOW_PATTERN] choices = [...]" in fixed
    locked = space.with_locked(["DEPTH"])
    assert locked.specs["DEPTH"].describe().endswith("(locked)")
    names = [s.name for s in locked.tunable(frozen={"SEED"})]
    assert names == [
        "ASPECT_RATIO",
        "MATRIX_LR",
        "TOTAL_BATCH_SIZE",
        "WARMUP_RATIO",
        "WEIGHT_DECAY",
        "USE_BIAS",
    ]
    assert locked.with_locked(["DEPTH"], locked=False) == space
    assert space.names()[:2] == ("DEPTH", "ASPECT_RATIO")
    with pytest.raises(ConfigError, match="DEPHT.*did you mean DEPTH"):
        space.with_locked(["DEPHT"])


def test_no_room_is_not_tunable():
    one = ParamSpec("X", "int", 4, low=4, high=4)
    pow2 = ParamSpec("Y", "int", 4, low=4, high=7, pow2=True)
    assert ParameterSpace([one, pow2]).tunable() == ()


def test_validate_coerces(space):
    changes = {
        "DEPTH": 8.0,
        "MATRIX_LR": 0.01,
        "WEIGHT_DECAY": 0,
        "TOTAL_BATCH_SIZE": 1024,
        "USE_BIAS": False,
        "ASPECT_RATIO": 64,
    }
    got = space.validate(changes, CURRENT)
    assert got == {
        "DEPTH": 8,
        "MATRIX_LR": 0.01,
        "TOTAL_BATCH_SIZE": 1024,
        "USE_BIAS": False,
    }  # WEIGHT_DECAY 0 and ASPECT_RATIO 64 equal the current values: dropped
    assert type(got["DEPTH"]) is int
    assert type(space.validate({"WEIGHT_DECAY": 1}, CURRENT)["WEIGHT_DECAY"]) is float


def test_validate_choices_are_normalised():
    table = {
        "ADAM_BETAS": {"choices": [[0.8, 0.95], [0.9, 0.95]]},
        "WINDOW_PATTERN": {"choices": ["L", "SL", "SSL"]},
    }
    space = ParameterSpace.from_toml(table, CONSTANTS)
    assert space.specs["ADAM_BETAS"].choices == ((0.8, 0.95), (0.9, 0.95))
    got = space.validate({"ADAM_BETAS": [0.9, 0.95], "WINDOW_PATTERN": "L"}, CURRENT)
    assert got == {"ADAM_BETAS": (0.9, 0.95), "WINDOW_PATTERN": "L"}
    assert isinstance(got["ADAM_BETAS"], tuple)


@pytest.mark.parametrize(
    ("changes", "frozen", "reason", "match"),
    [
        ({}, (), "empty", "changes nothing"),
        ({"DEPHT": 5}, (), "unknown", "DEPHT is not a constant.*did you mean DEPTH"),
        ({"ASPECT_RATIO": 32}, (), "locked", "ASPECT_RATIO is locked"),
        ({"SEED": 1}, {"SEED"}, "frozen", "SEED is frozen"),
        ({"DEPTH": 6.5}, (), "type", r"DEPTH must be an integer in \[1, 24\], got 6.5"),
        ({"DEPTH": True}, (), "type", "DEPTH must be an integer"),
        ({"MATRIX_LR": "0.01"}, (), "type", "MATRIX_LR must be a finite number"),
        ({"MATRIX_LR": float("nan")}, (), "type", "MATRIX_LR must be a finite number"),
        ({"USE_BIAS": 1}, (), "type", "USE_BIAS must be True or False"),
        ({"WINDOW_PATTERN": 3}, (), "type", "WINDOW_PATTERN must be a string"),
        ({"ADAM_BETAS": 0.9}, (), "type", "ADAM_BETAS must be a tuple"),
        ({"CLIP": 1.0}, (), "type", "CLIP must be None"),
        ({"MATRIX_LR": 1.0}, (), "range", r"MATRIX_LR=1.0 is outside .*\[0.004, 0.4\]"),
        ({"TOTAL_BATCH_SIZE": 3000}, (), "range", "not a power of two in"),
        ({"WINDOW_PATTERN": "L"}, (), "choice", r"\[params.WINDOW_PATTERN\] choices"),
        ({"DEPTH": 6, "MATRIX_LR": 0.04}, (), "noop", "only repeats the current values"),
    ],
)
def test_validate_refusals(space, changes, frozen, reason, match):
    space = space.with_locked(["ASPECT_RATIO"])
    with pytest.raises(ProposalError, match=match) as info:
        space.validate(changes, CURRENT, frozen)
    assert info.value.reason == reason


def test_validate_choice_not_listed():
    space = ParameterSpace.from_toml({"WINDOW_PATTERN": {"choices": ["L", "SL"]}}, CONSTANTS)
    with pytest.raises(ProposalError, match="WINDOW_PATTERN='SSL' is not one of 'L', 'SL'") as e:
        space.validate({"WINDOW_PATTERN": "SSL"}, CURRENT)
    assert e.value.reason == "choice"


USER_TOML = """\
# arx settings
[params]
locked = ["DEPTH"]  # never touch the depth

[params.MATRIX_LR]
# tuned by hand last week
type = "float"
value = 0.04
low = 5e-3  # below this it diverges
high = 0.32
log = true

[params.WINDOW_PATTERN]
type = "str"
value = "SL"
choices = ["L", "SL", "SSL", "SSSL"]

[params.ADAM_BETAS]
type = "tuple"
value = [0.8, 0.95]
choices = [[0.8, 0.95], [0.9, 0.95]]
"""


def test_from_toml_merges_over_inference():
    doc = tomlkit.parse(USER_TOML)
    space = ParameterSpace.from_toml(doc["params"], CONSTANTS)
    assert space.names() == tuple(c.name for c in CONSTANTS)
    lr = space.specs["MATRIX_LR"]
    assert (lr.low, lr.high, lr.log, lr.pow2) == (0.005, 0.32, True, False)
    assert space.specs["DEPTH"].locked
    assert space.specs["WINDOW_PATTERN"].choices == ("L", "SL", "SSL", "SSSL")
    assert space.specs["TOTAL_BATCH_SIZE"] == infer_spec(CONSTANTS[3])
    # tomllib gives plain dicts: same result
    assert ParameterSpace.from_toml(tomllib.loads(USER_TOML)["params"], CONSTANTS) == space


def test_toml_round_trip(space):
    space = space.with_locked(["ASPECT_RATIO", "SEED"])
    text = tomlkit.dumps({"params": space.to_toml()})
    assert text.endswith('[params.CLIP]\ntype = "none"\n')  # no value: TOML has no null
    for table in (tomlkit.parse(text)["params"], tomllib.loads(text)["params"]):
        assert ParameterSpace.from_toml(table, CONSTANTS) == space
    assert ParameterSpace.from_toml(tomllib.loads(text)["params"]) == space  # table alone


def test_rewrite_keeps_user_comments():
    doc = tomlkit.parse(USER_TOML)
    space = ParameterSpace.from_toml(doc["params"], CONSTANTS)
    space = space.with_locked(["SEED"]).with_locked(["DEPTH"], locked=False)
    returned = space.to_toml(into=doc["params"])
    assert returned is doc["params"]
    text = tomlkit.dumps(doc)
    for kept in [
        "# arx settings",
        "# tuned by hand last week",
        "low = 5e-3  # below this it diverges",
        'locked = ["SEED"]  # never touch the depth',
    ]:
        assert kept in text
    assert ParameterSpace.from_toml(tomlkit.parse(text)["params"], CONSTANTS) == space
    # writing the same space again changes nothing
    ParameterSpace.from_toml(doc["params"], CONSTANTS).to_toml(into=doc["params"])
    assert tomlkit.dumps(doc) == text


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"MATRIX_LR": {"low": 0.5, "high": 0.1}}, r"\[params.MATRIX_LR\].*greater than high"),
        ({"MATRIX_LR": {"type": "double"}}, r"\[params.MATRIX_LR\] has type 'double'"),
        ({"MATRIX_LR": {"type": "int"}}, r"\[params.MATRIX_LR\] says type 'int'"),
        ({"MATRIX_LR": {"low": 0.0, "high": 1.0, "log": True}}, "log = true needs low > 0"),
        ({"DEPTH": {"low": 1, "high": 12, "pow2": True}}, r"\[params.DEPTH\]: pow2 = true"),
        ({"DEPTH": {"low": 1.5, "high": 12}}, r"\[params.DEPTH\]: low and high must be int"),
        ({"DEPTH": {"low": 1}}, r"\[params.DEPTH\] needs both low and high"),
        ({"DEPTH": {"choices": [1, 2], "low": 1}}, "both choices and a range"),
        ({"DEPTH": {"choices": []}}, "non-empty array"),
        ({"DEPTH": {"choices": [1, "two"]}}, "a choice is not a int"),
        ({"DEPTH": {"hi": 3}}, r"\[params.DEPTH\] has unknown key\(s\) hi"),
        ({"WINDOW_PATTERN": {"low": 1, "high": 2}}, "takes choices, not low/high"),
        ({"DEPHT": {"low": 1, "high": 2}}, r"\[params.DEPHT\] .*no parameter.*did you mean DEPTH"),
        ({"locked": ["NOPE"]}, "locked in arx.toml names NOPE"),
        ({"locked": "DEPTH"}, "must be an array of names"),
        ({"DEPTH": 3}, "must be a table"),
    ],
)
def test_malformed_entries_raise_config_error(table, match):
    with pytest.raises(ConfigError, match=match):
        ParameterSpace.from_toml(table, CONSTANTS)


def test_table_without_constants_needs_values():
    with pytest.raises(ConfigError, match=r"\[params.X\] needs a value"):
        ParameterSpace.from_toml({"X": {"type": "int", "low": 1, "high": 2}})
    with pytest.raises(ConfigError, match=r"\[params.X\] needs a type"):
        ParameterSpace.from_toml({"X": {"low": 1, "high": 2}})
    space = ParameterSpace.from_toml({"X": {"value": 3}})
    assert space.specs["X"] == infer_spec(const("X", 3))


def test_list_constant_keeps_lists_end_to_end():
    source = "SIZES = [1, [2, 3]]  # per stage\n"
    space = ParameterSpace.from_toml(
        {"SIZES": {"choices": [[1, [2, 3]], [2, [4, 6]]]}}, discover_constants(source)
    )
    assert space.specs["SIZES"].describe() == "SIZES one of [1, [2, 3]], [2, [4, 6]]"
    assert space.specs["SIZES"].contains((2, (4, 6)))
    assert not space.specs["SIZES"].contains([2, [4, 7]])
    got = space.validate({"SIZES": (2, (4, 6))}, {"SIZES": [1, [2, 3]]})
    assert got == {"SIZES": [2, [4, 6]]} and isinstance(got["SIZES"][1], list)
    assert apply_changes(source, got) == "SIZES = [2, [4, 6]]  # per stage\n"


def test_validated_changes_apply_and_read_back(space):
    changes = space.validate({"DEPTH": 8.0, "MATRIX_LR": 0.01, "TOTAL_BATCH_SIZE": 2048}, CURRENT)
    patched = apply_changes(SOURCE, changes)
    assert "TOTAL_BATCH_SIZE = 2**11\n" in patched
    assert {c.name: c.value for c in discover_constants(patched)} == {**CURRENT, **changes}
