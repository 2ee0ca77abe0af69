"""Generated code checked before libcst parses it in arx's process.

libcst's native parser crashed arx (SIGSEGV, rc 139) on 20 kB of nested brackets in a patch,
and did so again at every resume. So code from an LLM or a mechanism file passes two checks
first: ``check_shape`` (linear, in process: brackets nested deeper than ``MAX_NESTING``, which
Python itself refuses at 200, or more than ``MAX_CODE`` characters) and ``parse_in_child`` (libcst
parses every snippet in a child process with a time limit: a crash or a hang there is a refused
patch, never a dead arx). Only then do the transforms of ``runner_patch`` parse it here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence

from arx.core.errors import PatchError

__all__ = ["MAX_CODE", "MAX_NESTING", "check_shape", "parse_in_child"]

#: the deepest nesting of brackets generated code may have (Python refuses 200)
MAX_NESTING = 100
#: the most characters one snippet may have
MAX_CODE = 1 << 20
#: seconds the child may take to parse every snippet
PARSE_TIMEOUT_S = 30.0
_OPEN, _CLOSE = "([{", ")]}"
_CHILD = """
import json, sys, textwrap
import libcst
for code in json.loads(sys.stdin.read()):
    try:
        libcst.parse_module(textwrap.dedent(code).strip("\\n") + "\\n")
    except Exception:
        pass  # a syntax error: arx reports it when it parses the snippet itself
"""


def check_shape(code: str, what: str = "patch") -> None:
    """``PatchError`` when ``code`` is longer than ``MAX_CODE`` or nests brackets deeper than
    ``MAX_NESTING`` (outside string literals, roughly: quotes are tracked, not prefixes)."""
    if len(code) > MAX_CODE:
        raise PatchError(f"the {what} code is {len(code)} characters, more than {MAX_CODE}")
    depth = 0
    quote = ""
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if quote:
            if c == "\\":
                i += 1
            elif code.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif c == "#":
            j = code.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "'\"":
            quote = code[i:i + 3] if code[i:i + 3] in ("'''", '"""') else c
            i += len(quote) - 1
        elif c in _OPEN:
            depth += 1
            if depth > MAX_NESTING:
                raise PatchError(f"the {what} code nests brackets deeper than {MAX_NESTING} "
                                 "levels")
        elif c in _CLOSE:
            depth = max(0, depth - 1)
        i += 1


def parse_in_child(snippets: Sequence[str]) -> None:
    """Parse ``snippets`` with libcst in a child process; ``PatchError`` when it crashes, runs
    out of time or cannot start. Syntax errors are left to the caller's own parse."""
    for code in snippets:
        check_shape(code)
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(list(snippets)),
                              capture_output=True, text=True, timeout=PARSE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PatchError(f"parsing the patch code took more than {PARSE_TIMEOUT_S:g} s") from None
    except OSError as e:
        raise PatchError(f"could not start the parser's process: {e}") from None
    if proc.returncode != 0:
        if proc.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-proc.returncode}"
        else:
            how = f"exited with code {proc.returncode}: " + \
                (proc.stderr.strip().splitlines() or [""])[-1][:200]
        raise PatchError(f"the patch code crashed the parser: libcst {how}")
