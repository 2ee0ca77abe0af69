"""arx.core.codemods.runner_patch: the four runner patches, before/after on real libcst.

The mechanism layer (tests/core/levels/test_mechanism.py) drives the same functions through its
patch records; these tests call them directly.
"""

from __future__ import annotations

import pytest

from arx.core.codemods.runner_patch import (
    add_helper_class,
    add_method,
    extend_init,
    method_name,
    replace_method,
)
from arx.core.errors import PatchError

RUNNER = '''\
"""A runner."""

import math


class Runner:
    def __init__(self, config):
        self.config = dict(config)

    # picks one
    def select(self, ctx, candidates):
        return candidates[0]
'''


def test_add_helper_class_goes_before_runner_with_its_import():
    out = add_helper_class(RUNNER, "import heapq\n\nclass Probe:\n    pass\n", "Probe")
    assert out == RUNNER.replace(
        "import math\n\n\nclass Runner:",
        "import math\nimport heapq\n\n\nclass Probe:\n    pass\n\n\nclass Runner:")


def test_add_method_appends_to_runner():
    out = add_method(RUNNER, "    def last(self, c):\n        return c[-1]\n")
    assert out == RUNNER + "\n    def last(self, c):\n        return c[-1]\n"


def test_replace_method_keeps_the_comment_above():
    out = replace_method(RUNNER, "select", "def select(self, ctx, candidates):\n    return None\n")
    assert out == RUNNER.replace("return candidates[0]", "return None")


def test_extend_init_appends_statements():
    out = extend_init(RUNNER, "self.n = 4\n")
    assert out == RUNNER.replace(
        "self.config = dict(config)\n", "self.config = dict(config)\n        self.n = 4\n")


def test_method_name():
    assert method_name("def helper(self):\n    pass\n") == "helper"
    with pytest.raises(PatchError, match="exactly one `def`"):
        method_name("x = 1\n")


@pytest.mark.parametrize(("patch", "match"), [
    (lambda s: add_method(s, "def select(self):\n    pass\n"), "already has a method 'select'"),
    (lambda s: replace_method(s, "selct", "def selct(self):\n    pass\n"),
     r"'selct' matched 0 times, expected exactly once \(did you mean select\?\)"),
    (lambda s: add_helper_class(s, "class math:\n    pass\n"), "already defines 'math'"),
    (lambda s: extend_init(s, ""), "code is empty"),
])
def test_refusals(patch, match):
    with pytest.raises(PatchError, match=match):
        patch(RUNNER)


@pytest.mark.parametrize("patch", [
    lambda s: add_helper_class(s, "class Probe:\n    pass\n"),
    lambda s: add_method(s, "def f(self):\n    pass\n"),
    lambda s: replace_method(s, "select", "def select(self):\n    pass\n"),
    lambda s: extend_init(s, "self.x = 1"),
])
def test_every_patch_needs_exactly_one_runner_class(patch):
    with pytest.raises(PatchError, match="'Runner' matched 0 times"):
        patch("x = 1\n")
    with pytest.raises(PatchError, match="'Runner' matched 2 times"):
        patch(RUNNER + "\n\nclass Runner:\n    pass\n")


def test_a_source_that_does_not_parse_is_refused():
    with pytest.raises(PatchError, match="does not parse"):
        add_method("class Runner(:\n", "def f(self):\n    pass\n")
