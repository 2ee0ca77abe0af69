"""arx.core.codemods.untrusted: generated code checked before libcst parses it in arx."""

from __future__ import annotations

import pytest

from arx.core.codemods import untrusted
from arx.core.codemods.untrusted import MAX_NESTING, check_shape, parse_in_child
from arx.core.errors import PatchError


def test_the_shape_check_counts_brackets_outside_strings_and_comments():
    check_shape("x = '" + "[" * 500 + "'  # " + "(" * 500 + "\ny = '''\n" + "{" * 500 + "'''\n")
    check_shape("x = " + "[" * MAX_NESTING + "]" * MAX_NESTING)
    with pytest.raises(PatchError, match="deeper than"):
        check_shape("x = " + "(" * (MAX_NESTING + 1))


def test_a_parser_that_crashes_in_the_child_is_a_refused_patch(monkeypatch):
    parse_in_child(["class A:\n    pass\n", "def broken(:\n"])  # syntax errors are not crashes
    monkeypatch.setattr(untrusted, "_CHILD", "import os, signal\nos.kill(os.getpid(), "
                                             "signal.SIGSEGV)")
    with pytest.raises(PatchError, match="crashed the parser: libcst was killed by SIGSEGV"):
        parse_in_child(["class A:\n    pass\n"])
