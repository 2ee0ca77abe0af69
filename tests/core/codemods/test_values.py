"""arx.core.codemods.values: evaluating literal expressions and rendering values as literals."""

from __future__ import annotations

import libcst
import pytest

from arx.core.codemods.values import NotConstant, evaluate, kind_of, render_value


def value_of(text):
    return evaluate(libcst.parse_expression(text))


@pytest.mark.parametrize(
    ("text", "value"),
    [("2**-1", 0.5), ("7 // 2", 3), ("7 % 4", 3), ("-(2 - 5)", 3), ("+1.5", 1.5),
     ("(1, -2**3)", (1, -8)), ("1_000", 1000), ("[1, ('a', None)]", [1, ("a", None)])],
)
def test_constant_arithmetic(text, value):
    assert repr(value_of(text)) == repr(value)  # the type too: 2**-1 is a float, 7 // 2 an int


@pytest.mark.parametrize(
    "text",
    ["int('3')", "Y", "f'{1}'", "b'raw'", "1j", "(*Y, 1)", "{'a': 1}", "'a' * 3", "-True",
     "2**2000", "10**10**10", "1 % 0", "(-8) ** 0.5", "1e308 * 10", "1e400"],
)
def test_evaluate_refuses_what_is_not_a_bounded_literal(text):
    with pytest.raises(NotConstant):
        value_of(text)


def test_kind_of():
    kinds = [kind_of(v) for v in (1, 1.0, True, "s", None, (1,), [1])]
    assert kinds == ["int", "float", "bool", "str", "none", "tuple", "list"]


@pytest.mark.parametrize(
    ("value", "like", "text"),
    [
        (2**20, "2**19", "2**20"),
        (2**5, "2 ** 8", "2 ** 5"),
        (48, "2**5", "48"),
        (1, "2**3", "1"),
        (-3, "4", "-3"),
        (1_000_000, "1_000", "1_000_000"),
        (0.1, "0.2", "0.1"),
        (1 / 3, None, "0.3333333333333333"),
        (-0.002, "-1e-3", "-2e-3"),
        (5e-4, "3e-4", "5e-4"),
        (1.5e-05, "3e-4", "1.5e-5"),
        (1e20, "1e3", "1e20"),
        (2.0, None, "2.0"),
        (-0.0, None, "-0.0"),
        (True, None, "True"),
        (None, "3", "None"),
        ("SL", None, '"SL"'),
        ("SL", "'L'", "'SL'"),
        ("it's", "'x'", '"it\'s"'),
        ('say "hi"', None, "'say \"hi\"'"),
        ("both ' and \"", None, repr("both ' and \"")),
        ("tab\tnew\n", None, '"tab\\tnew\\n"'),
        ((0.9, 0.95), None, "(0.9, 0.95)"),
        ((1,), None, "(1,)"),
        ((), None, "()"),
        ([1, (2, "x")], "['a']", "[1, (2, 'x')]"),
        (((1, 2), [3, None]), None, "((1, 2), [3, None])"),
    ],
)
def test_render_value_keeps_style_and_round_trips(value, like, text):
    assert render_value(value, like) == text
    assert repr(value_of(text)) == repr(value)
