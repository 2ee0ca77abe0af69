"""arx.core.loop.params: the spec of one parameter, inferred from a constant."""

from __future__ import annotations

import pytest

from arx.core.codemods.constants import Constant, discover_constants
from arx.core.loop.params import ParamSpec, infer_spec


def const(name: str, value: object) -> Constant:
    (c,) = discover_constants(f"{name} = {value!r}\n")
    return c


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("USE_BIAS", True, {"choices": (False, True)}),
        ("BATCH", 4096, {"low": 512, "high": 32768, "pow2": True}),
        ("HEADS", 2, {"low": 1, "high": 4, "log": True}),
        ("LAYERS", 3, {"low": 1, "high": 6, "log": True}),
        ("DEPTH", 6, {"low": 1, "high": 24, "log": True}),
        ("ONE", 1, {"low": 1, "high": 4, "log": True}),
        ("SEED", 0, {"low": 0, "high": 10}),  # 0 is "off" or a count: never negative
        ("OFFSET", -3, {"low": -13, "high": 7}),
        ("WARMUP_RATIO", 0.1, {"low": 0.0, "high": 1.0}),
        ("FINAL_LR_FRAC", 1.0, {"low": 0.0, "high": 1.0}),
        ("DROPOUT", 0.2, {"low": 0.0, "high": 1.0}),
        ("MATRIX_LR", 0.04, {"low": 0.004, "high": 0.4, "log": True}),
        ("TIME_BUDGET", 300.0, {"low": 30.0, "high": 3000.0, "log": True}),
        ("WEIGHT_DECAY", 0.0, {"low": 0.0, "high": 1.0}),
        ("SHIFT", -0.5, {"low": -5.0, "high": 0.0}),
        ("PATTERN", "SL", {"choices": ("SL",)}),
        ("BETAS", (0.8, 0.95), {"choices": ((0.8, 0.95),)}),
        ("SIZES", [1, [2, 3]], {"choices": ((1, (2, 3)),)}),
        ("CLIP", None, {"choices": (None,)}),
    ],
)
def test_infer_spec_for_each_kind(name, value, expected):
    c = const(name, value)
    spec = infer_spec(c)
    full = {"low": None, "high": None, "log": False, "pow2": False, "choices": None, **expected}
    assert spec == ParamSpec(name=name, kind=c.kind, default=value, **full)
    assert spec.contains(value)
    assert infer_spec(c, locked=True).locked
