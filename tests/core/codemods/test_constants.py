"""arx.core.codemods.constants: constant discovery and value patches, on real libcst."""

from __future__ import annotations

import pytest

from arx.core.codemods.constants import Constant, apply_changes, discover_constants
from arx.core.errors import PatchError

TARGET = '''\
"""A training script."""
import os
from math import pi

DEPTH = 4  # model depth
MATRIX_LR: float = 3e-4   # learning rate
TOTAL_BATCH_SIZE = 2**19  # tokens per step
DEVICE_BATCH_SIZE = 3 * 1024
NEG = -1e-3
HALF = 0.5 / 2
WINDOW_PATTERN = "SSSL"
ADAM_BETAS = (0.8, 0.95)  # betas
NESTED = ((1, 2), [3, "a"])
USE_BIAS: bool = True
DEVICE = None;  EVAL_EVERY = 250  # two on a line
A = B = 1
C, D = 1, 2
DUP = 1
DUP = 2
CALL = int(3)
ALIAS = DEPTH
FSTR = f"x{DEPTH}"
BYTES = b"raw"
HUGE = 10**10**10
INF = 1e400
ZERO_DIV = 1 / 0
GROWN = 3
GROWN += 1
SHADOWED = 1
for SHADOWED in range(2):
    pass
if os.environ.get("CUDA"):
    DEPTH_IF = 8
    DEVICE_BATCH_SIZE_GPU = 64


class Model:
    WIDTH = 128


def train(lr=MATRIX_LR):
    DEPTH = 8  # a local with the same name
    return DEPTH * lr
'''

EXPECTED = [
    # name, value, kind, source, annotation, line, comment
    ("DEPTH", 4, "int", "4", None, 5, "model depth"),
    ("MATRIX_LR", 3e-4, "float", "3e-4", "float", 6, "learning rate"),
    ("TOTAL_BATCH_SIZE", 2**19, "int", "2**19", None, 7, "tokens per step"),
    ("DEVICE_BATCH_SIZE", 3072, "int", "3 * 1024", None, 8, None),
    ("NEG", -1e-3, "float", "-1e-3", None, 9, None),
    ("HALF", 0.25, "float", "0.5 / 2", None, 10, None),
    ("WINDOW_PATTERN", "SSSL", "str", '"SSSL"', None, 11, None),
    ("ADAM_BETAS", (0.8, 0.95), "tuple", "(0.8, 0.95)", None, 12, "betas"),
    ("NESTED", ((1, 2), [3, "a"]), "tuple", '((1, 2), [3, "a"])', None, 13, None),
    ("USE_BIAS", True, "bool", "True", "bool", 14, None),
    ("DEVICE", None, "none", "None", None, 15, "two on a line"),
    ("EVAL_EVERY", 250, "int", "250", None, 15, "two on a line"),
    ("Model.WIDTH", 128, "int", "128", None, 38, None),  # a class without methods is a config
]


def test_discovers_literal_top_level_constants_in_order():
    found = discover_constants(TARGET)
    got = [(c.name, c.value, c.kind, c.source, c.annotation, c.line, c.comment) for c in found]
    assert got == EXPECTED
    assert all(isinstance(c, Constant) for c in found)


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    X = 1\n",
        "if True:\n    X = 1\n",
        "if True: X = 1\n",
        "with open('f') as fh:\n    X = 1\n",
        "X = Y = 1\n",
        "X, Y = 1, 2\n",
        "[X] = [1]\n",
        "X = 1\nX = 2\n",
        "X = 1\nif True:\n    X = 2\n",
        "X = 1\nimport X\n",
        "X = 1\ndef X(): pass\n",
        "X = 1\nwith open('f') as X: pass\n",
        "X = 1\nprint(X := 2)\n",
        "X = int('3')\n",
        "X = Y\n",
        "X = f'{1}'\n",
        "X = b'raw'\n",
        "X = 1j\n",
        "X = (*Y, 1)\n",
        "X = 'a' * 3\n",
        "X = -True\n",
        "X = 2**2000\n",
        "X = 10**10**10\n",
        "X = 1 % 0\n",
        "X = (-8) ** 0.5\n",
        "X = 1e308 * 10\n",
        "X: int\n",
        "self.x = 1\n",
    ],
)
def test_skips_what_is_not_a_single_literal_top_level_assignment(source):
    assert discover_constants(source) == []


def test_local_variables_are_not_module_bindings():
    source = "X = 1\ndef f():\n    X = 2\n    global Y\nclass K:\n    X = 3\nf = lambda X=4: X\n"
    assert [(c.name, c.value) for c in discover_constants(source)] == [("X", 1), ("K.X", 3)]


def test_syntax_error_names_the_line():
    with pytest.raises(PatchError, match="line 3"):
        discover_constants("A = 1\nB = 2\nC = (\n")
    with pytest.raises(PatchError, match="line 2"):
        apply_changes("A = 1\ndef (:\n", {"A": 2})


def test_apply_changes_rewrites_only_the_values():
    after = apply_changes(
        TARGET,
        {
            "DEPTH": 6,
            "MATRIX_LR": 0.0005,
            "TOTAL_BATCH_SIZE": 2**20,
            "WINDOW_PATTERN": "L",
            "ADAM_BETAS": (0.9, 0.95),
            "USE_BIAS": False,
            "DEVICE": "cpu",
            "EVAL_EVERY": 100,
        },
    )
    expected = (
        TARGET.replace("DEPTH = 4  # model depth", "DEPTH = 6  # model depth")
        .replace("MATRIX_LR: float = 3e-4   #", "MATRIX_LR: float = 5e-4   #")
        .replace("TOTAL_BATCH_SIZE = 2**19", "TOTAL_BATCH_SIZE = 2**20")
        .replace('WINDOW_PATTERN = "SSSL"', 'WINDOW_PATTERN = "L"')
        .replace("ADAM_BETAS = (0.8, 0.95)", "ADAM_BETAS = (0.9, 0.95)")
        .replace("USE_BIAS: bool = True", "USE_BIAS: bool = False")
        .replace("DEVICE = None;  EVAL_EVERY = 250", 'DEVICE = "cpu";  EVAL_EVERY = 100')
    )
    assert after == expected
    assert "    DEPTH = 8  # a local with the same name\n" in after  # the local is untouched


def test_apply_changes_before_after_small():
    before = "import torch\n\nLR = 0.02  # lr\nBATCH =  2 ** 8\n\ndef f():\n    LR = 1\n"
    after = "import torch\n\nLR = 0.01  # lr\nBATCH =  2 ** 5\n\ndef f():\n    LR = 1\n"
    assert apply_changes(before, {"LR": 0.01, "BATCH": 32}) == after


def test_apply_changes_keeps_crlf_and_annotation():
    before = "X: int = 3  # c\r\nY = 'a'\r\n"
    assert apply_changes(before, {"X": 4, "Y": "b"}) == "X: int = 4  # c\r\nY = 'b'\r\n"


@pytest.mark.parametrize(
    "changes",
    [{}, {"DEPTH": 4}, {"TOTAL_BATCH_SIZE": 2**19, "ADAM_BETAS": (0.8, 0.95)}],
)
def test_no_change_leaves_the_source_byte_identical(changes):
    assert apply_changes(TARGET, changes) == TARGET


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("DEPHT", r"not a parameter of the target.*did you mean DEPTH"),
        ("DUP", "assigned 2 times"),
        ("SHADOWED", "assigned 2 times"),
        ("GROWN", "assigned 2 times"),
        ("DEPTH_IF", "not a parameter of the target"),
        ("WIDTH", "not a parameter of the target"),
        ("CALL", r"line 20\) is not a parameter arx can rewrite: not a literal \(int\(3\)\)"),
        ("A", "not a parameter of the target"),
    ],
)
def test_unknown_or_ambiguous_names_raise(name, match):
    with pytest.raises(PatchError, match=match):
        apply_changes(TARGET, {name: 5})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"a": 1}, {1, 2}, b"x", 1j])
def test_values_without_a_literal_raise(value):
    with pytest.raises(PatchError, match="literal"):
        apply_changes(TARGET, {"DEPTH": value})


def test_render_value_round_trips_through_apply():
    for value in [2**30, -7, 3.141592653589793, 1e-300, "x'y\"z", ((1, [2.5]), ("a",))]:
        (c,) = discover_constants(apply_changes("X = 2**3  # keep\n", {"X": value}))
        assert repr(c.value) == repr(value)
        assert c.comment == "keep"


def test_a_patch_of_top_level_constants_reads_back_without_the_whole_discovery(monkeypatch):
    """Top-level constants only: the patched text is parsed again and each changed value read
    back, without the discovery of every surface (most of a patch's time); any other surface
    takes the full read-back, and a value that does not read back is still refused."""
    from arx.core.codemods import constants

    source = "LR = 0.1  # step\nparams = {'wd': 0.01}\n"
    collected = constants._parsed(source)[1]
    read_back = constants._constants_read_back
    assert read_back(source.replace("0.1", "0.2"), {"LR": 0.2}, collected)
    assert not read_back(source.replace("0.1", "0.3"), {"LR": 0.2}, collected)
    assert not read_back(source, {"params.wd": 0.02}, collected)  # a dict entry: not this path
    full = []
    discover = constants.discover_constants
    monkeypatch.setattr(constants, "discover_constants", lambda *a: full.append(a) or discover(*a))
    assert apply_changes(source, {"LR": 0.2}) == "LR = 0.2  # step\nparams = {'wd': 0.01}\n"
    assert full == []
    assert apply_changes(source, {"params.wd": 0.02}).endswith("{'wd': 0.02}\n") and full
    monkeypatch.setattr(constants, "render_value", lambda value, like=None: "0.25")
    with pytest.raises(PatchError, match="patching LR to 0.2 did not round-trip"):
        apply_changes(source, {"LR": 0.2})
