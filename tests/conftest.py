"""Fixtures shared by every test package."""

import signal

import pytest

from support.llm_server import llm_server  # noqa: F401 - the scripted OpenAI-compatible server

# A suite started as a background job of a non-interactive shell inherits SIGINT ignored; the
# Ctrl-C tests need Python's own handler, as in a terminal or a CI runner
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def toy_repo(tmp_path):
    """A fresh user checkout with the toy target adopted by `arx init` (real git, real libcst)."""
    from support.repos import make_toy_repo

    return make_toy_repo(tmp_path / "project")
