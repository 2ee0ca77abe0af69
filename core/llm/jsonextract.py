"""Find the one JSON object an LLM meant, in whatever it actually wrote.

Models wrap the object in prose or code fences, write Python instead of JSON (``2**18``,
``(0.9, 0.95)``, ``True``, single quotes, trailing commas) or give an example before the answer.
``extract_json_object`` tries fenced blocks first, then every balanced ``{...}`` in the text, and
parses each as JSON, then as a safe Python literal (arithmetic on numbers allowed, names only
``true/false/null/True/False/None``). Of the objects that parse, the first with a ``changes`` or
``candidates`` key wins, else the first one. Nothing is ever ``eval``-ed.

The answer is untrusted text of any shape, so the work is bounded by its size: one pass finds
every ``{``'s closing ``}`` and the depth of what lies between (``_spans``), an object nested
deeper than ``MAX_DEPTH`` is refused without being parsed, and at most ``MAX_PARSES`` snippets
are parsed. 200,000 ``{`` or a 990-deep nesting are refused in well under a second
(``json_depth`` does the same check for any JSON text before ``json.loads``).
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
#: the deepest nesting of objects and lists an answer may have
MAX_DEPTH = 64
#: the most snippets one answer gets parsed
MAX_PARSES = 200
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_JSON_MARKS = re.compile(r'[\[\]{}"\\]|(?<=\\).')
_NAMES = {"true": True, "false": False, "null": None, "none": None,
          "True": True, "False": False, "None": None}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def json_depth(text: str | bytes, limit: int = MAX_DEPTH) -> int:
    """How deep objects and lists nest in the JSON ``text`` (strings skipped): exact up to
    ``limit + 1`` (where it stops counting) for text deeper than ``limit``, at most ``limit``
    otherwise. A linear check to make before ``json.loads``, which raises ``RecursionError``
    (or worse) on a deep enough nesting."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if text.count("[") + text.count("{") <= limit:
        return min(limit, text.count("[") + text.count("{"))  # cannot be deeper (C speed)
    depth = deepest = 0
    in_string = escaped = False
    for match in _JSON_MARKS.finditer(text):
        c = match.group()
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
            continue
        if escaped:
            escaped = False
        if c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif c in "]}":
            depth -= 1
    return deepest


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
    resume = 0  # after an object that parsed, its inner braces are not candidates
    parses = 0
    for start, end, depth in _spans(block):
        if start < resume:
            continue
        if end is None:
            if not errors:
                errors.append("the JSON object is not closed (the answer may be truncated)")
            failed_until = max(failed_until, len(block))
            continue
        if depth > MAX_DEPTH:
            if not any("nested deeper" in e for e in errors):
                errors.append(f"the JSON object is nested deeper than {MAX_DEPTH} levels")
            failed_until = max(failed_until, end)
            continue
        parses += 1
        if parses > MAX_PARSES:
            errors.append(f"gave up after {MAX_PARSES} candidate objects")
            break
        snippet = block[start:end]
        try:
            obj = parse_object(snippet)
        except ValueError as exc:
            errors.append(f"could not parse {_short(snippet)}: {exc}")
            failed_until = max(failed_until, end)
            continue
        if isinstance(obj, dict):
            out.append((obj, start < failed_until))
            resume = end
    return out


def _spans(s: str) -> list[tuple[int, int | None, int]]:
    """For every ``{`` outside quoted strings, in order: (its index, the index just past its
    closing ``}`` or None, how deep braces and brackets nest from it to there). One pass: quotes
    are tracked inside an open ``{``; a ``'`` string that runs into a newline was an apostrophe
    in prose, and the braces open there stay unclosed."""
    spans: dict[int, list] = {}
    stack: list[list] = []  # open [char, index, deepest nesting inside]
    quote: str | None = None
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
            elif c == "\n" and quote == "'":
                quote = None
                stack.clear()
        elif c in "\"'":
            quote = c if stack else None
        elif c == "{" or (c == "[" and stack):
            stack.append([c, i, 0])
            if c == "{":
                spans[i] = [i, None, 0]
        elif (c == "]" and stack and stack[-1][0] == "[") or (c == "}" and stack):
            while stack:
                char, start, inner = stack.pop()
                if stack:
                    stack[-1][2] = max(stack[-1][2], inner + 1)
                if char == "{":
                    spans[start][1:] = [i + 1, inner + 1]
                if char == "{" or c == "]":
                    break
        i += 1
    return [tuple(v) for v in spans.values()]


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
