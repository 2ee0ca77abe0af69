"""Python values and their source text: evaluating literal expressions and writing values back.

``evaluate`` reads the value of a literal or constant-arithmetic expression by walking its CST
(never ``eval``), within limits (``2**19`` yes, ``10**10**10`` no); ``render_value`` writes a value
as a literal that parses back to the same value, in the style of the text it replaces.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from decimal import Decimal

import libcst as cst

from arx.core.errors import PatchError

__all__ = ["MAX_EXPONENT", "MAX_INT_BITS", "NotConstant", "evaluate", "kind_of", "render_value"]

#: limits of the constant arithmetic evaluator (``2**19`` yes, ``10**10**10`` no)
MAX_EXPONENT = 1024
MAX_INT_BITS = 4096


# -- safe evaluation of literal expressions ------------------------------------------------------


class NotConstant(Exception):
    """The expression is not a literal this module is willing to evaluate."""


_BINARY: dict[type, Callable[[object, object], object]] = {
    cst.Add: operator.add,
    cst.Subtract: operator.sub,
    cst.Multiply: operator.mul,
    cst.Divide: operator.truediv,
    cst.FloorDivide: operator.floordiv,
    cst.Modulo: operator.mod,
    cst.Power: operator.pow,
}
_NAMED = {"True": True, "False": False, "None": None}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(value: object) -> object:
    if not _is_number(value):  # e.g. (-8) ** 0.5 is complex
        raise NotConstant("not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise NotConstant("integer too large")
    if isinstance(value, float) and not math.isfinite(value):  # 1e400, 1e308 * 10
        raise NotConstant("not a finite number")
    return value


def _power(base: object, exponent: object) -> object:
    if abs(exponent) > MAX_EXPONENT:  # type: ignore[arg-type]
        raise NotConstant("exponent too large")
    big = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if big and base.bit_length() * exponent > MAX_INT_BITS:  # type: ignore[union-attr,operator]
        raise NotConstant("integer too large")
    return operator.pow(base, exponent)  # type: ignore[call-overload]


def evaluate(node: cst.BaseExpression) -> object:
    """The value of a literal expression, by walking the CST (no eval). Raises NotConstant."""
    if isinstance(node, (cst.Integer, cst.Float)):
        return _check_number(node.evaluated_value)
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        value = node.evaluated_value  # None for f-strings, bytes for b"..."
        if not isinstance(value, str):
            raise NotConstant("not a plain string")
        return value
    if isinstance(node, cst.Name) and node.value in _NAMED:
        return _NAMED[node.value]
    if isinstance(node, (cst.Tuple, cst.List)):
        items = []
        for element in node.elements:
            if not isinstance(element, cst.Element):
                raise NotConstant("starred element")
            items.append(evaluate(element.value))
        return tuple(items) if isinstance(node, cst.Tuple) else items
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
        operand = evaluate(node.expression)
        if not _is_number(operand):
            raise NotConstant("unary operator on a non-number")
        return _check_number(-operand if isinstance(node.operator, cst.Minus) else operand)
    if isinstance(node, cst.BinaryOperation) and type(node.operator) in _BINARY:
        left, right = evaluate(node.left), evaluate(node.right)
        if not (_is_number(left) and _is_number(right)):
            raise NotConstant("arithmetic on a non-number")
        try:
            if isinstance(node.operator, cst.Power):
                return _check_number(_power(left, right))
            return _check_number(_BINARY[type(node.operator)](left, right))
        except (ArithmeticError, ValueError) as e:  # division by zero, overflow
            raise NotConstant(str(e)) from None
    raise NotConstant(type(node).__name__)


def kind_of(value: object) -> str:
    """The kind of an evaluated value, as ``Constant.kind`` names it ('int', 'none', ...)."""
    if value is None:
        return "none"
    return {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple", list: "list"}[
        type(value)
    ]


# -- rendering -----------------------------------------------------------------------------------

_POW2_STYLE = re.compile(r"2(\s*\*\*\s*)\d+")
_SCI_FLOAT = re.compile(r"[-+]?\s*(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_UNDERSCORE_INT = re.compile(r"[-+]?\s*\d+(_\d+)+")


def _quote_preference(like: str | None) -> str:
    if like:
        for char in like:
            if char in "'\"":
                return char
    return '"'


def _render_str(value: str, quote: str) -> str:
    text = repr(value)  # Python picks the quote: ' unless the value holds ' and no "
    if quote == '"' and text[0] == "'" and '"' not in value:
        return '"' + text[1:-1] + '"'  # no quote inside: the escapes are valid for either
    return text


def _render_float(value: float, like: str | None) -> str:
    if not math.isfinite(value):
        raise PatchError(f"{value!r} cannot be written as a Python literal")
    text = repr(value)
    if like and _SCI_FLOAT.fullmatch(like.strip()) and value != 0:
        # keep the author's 3e-4 style: same digits as repr, so the value round-trips exactly
        mantissa, _, exponent = f"{Decimal(text).normalize():e}".partition("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def render_value(value: object, like: str | None = None) -> str:
    """A Python literal for ``value`` that parses back to the same value.

    ``like`` is the source text it replaces, used to keep the author's style: ``2**k`` for a
    power of two, ``1e-3`` scientific notation, ``1_000`` digit grouping, and the quote
    character of strings (double quotes when there is no original).
    """
    return _render(value, like, _quote_preference(like))


def _render(value: object, like: str | None, quote: str) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        if like is not None:
            m = _POW2_STYLE.fullmatch(like.strip())
            if m and value >= 2 and value & (value - 1) == 0:
                return f"2{m.group(1)}{value.bit_length() - 1}"
            if _UNDERSCORE_INT.fullmatch(like.strip()):
                return f"{value:_}"
        return repr(value)
    if isinstance(value, float):
        return _render_float(value, like)
    if isinstance(value, str):
        return _render_str(value, quote)
    if isinstance(value, (tuple, list)):
        items = [_render(v, None, quote) for v in value]  # elements keep the quote style only
        if isinstance(value, list):
            return "[" + ", ".join(items) + "]"
        if len(items) == 1:
            return f"({items[0]},)"
        return "(" + ", ".join(items) + ")"
    raise PatchError(f"a {type(value).__name__} value ({value!r}) cannot be written as a literal")
