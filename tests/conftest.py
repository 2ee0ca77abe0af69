"""Fixtures shared by every test package."""

import pytest

from support.llm_server import llm_server  # noqa: F401 - the scripted OpenAI-compatible server


@pytest.fixture
def toy_repo(tmp_path):
    """A fresh user checkout with the toy target adopted by `arx init` (real git, real libcst)."""
    from support.repos import make_toy_repo

    return make_toy_repo(tmp_path / "project")
