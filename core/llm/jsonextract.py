"""Find the one JSON object an LLM meant, in whatever it actually wrote.

Models wrap the object in prose or code fences, write Python instead of JSON (``2**18``,
``(0.9, 0.95)``, ``True``, single quotes, trailing commas) or give an example before the answer.
``extract_json_object`` tries fenced blocks first, then every balanced ``{...}`` in the text, and
parses each as JSON, then as a safe Python literal (arithmetic on numbers allowed, names only
``true/false/null/True/False/None``). Of the objects that parse, the first with a ``changes`` or
``candidates`` key wins, else the first one. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from typing import Any

#: keys that mark the object a proposer is after
PREFERRED_KEYS = ("changes", "candidates")
MAX_TEXT = 200_000
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_NAMES = {"true": True, "false": False, "null": None, "none": None,
          "True": True, "False": False, "None": None}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def extract_json_object(text: str) -> dict:
    """Return the object the text most likely meant; raise ``ValueError`` saying why not."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the answer is empty")
    text = text[:MAX_TEXT]
    found: list[dict] = []
    errors: list[str] = []
    for block in [m.group(2) for m in _FENCE.finditer(text)] + [text]:
        for obj, fragment in _objects(block, errors):
            if any(k in obj for k in PREFERRED_KEYS):
                return obj
            if not fragment:
                found.append(obj)
    if found:
        return found[0]
    if errors:
        raise ValueError(errors[0])
    raise ValueError("no JSON object ({...}) found in the answer")


def parse_object(snippet: str) -> Any:
    """Parse one ``{...}`` snippet as JSON, else as a restricted Python literal."""
    try:
        return json.loads(snippet)
    except (ValueError, RecursionError) as exc:
        json_error = exc
    try:
        tree = ast.parse(snippet.strip(), mode="eval")
    except (SyntaxError, RecursionError):
        raise ValueError(f"not valid JSON ({json_error})") from None
    try:
        return _literal(tree.body)
    except (TypeError, ArithmeticError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def _objects(block: str, errors: list[str]) -> list[tuple[dict, bool]]:
    """Every balanced object in ``block`` that parses to a dict, in order, with a flag telling
    whether it lies inside a larger ``{...}`` that did not parse (a fragment, not an answer)."""
    out: list[tuple[dict, bool]] = []
    failed_until = -1  # end of the widest failed candidate seen so far
    start = block.find("{")
    while start != -1:
        end = _balanced_end(block, start)
        if end is None:
            if not errors:
                errors.append("the JSON object is not closed (the answer may be truncated)")
            failed_until = max(failed_until, len(block))
            start = block.find("{", start + 1)
            continue
        snippet = block[start:end]
        try:
            obj = parse_object(snippet)
        except ValueError as exc:
            errors.append(f"could not parse {_short(snippet)}: {exc}")
            failed_until = max(failed_until, end)
            start = block.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            out.append((obj, start < failed_until))
            start = block.find("{", end)
        else:
            start = block.find("{", start + 1)
    return out


def _balanced_end(s: str, start: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``start``, skipping quoted strings."""
    depth = 0
    quote: str | None = None
    i = start
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
            elif c == "\n" and quote == "'":
                return None  # an apostrophe in prose, not a string
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool,
                                                                  type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("'**' unpacking is not a literal")
        return {_key(_literal(k)): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_number(_literal(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _number(_literal(node.left)), _number(_literal(node.right))
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 2**32):
            raise ValueError(f"power {left}**{right} is too large")
        value = _BINOPS[type(node.op)](left, right)
        if isinstance(value, complex) or (isinstance(value, float) and math.isnan(value)):
            raise ValueError("arithmetic gave no real number")
        return value
    raise ValueError(f"{ast.unparse(node)!r} is not a literal value")


def _number(v: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"arithmetic on a non-number {v!r}")
    return v


def _key(k: Any) -> Any:
    if isinstance(k, (list, dict)):
        raise TypeError(f"unhashable key {k!r}")
    return k


def _short(s: str, n: int = 60) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."
