"""Helpers shared by the command modules: error translation and the choice of proposer."""

from __future__ import annotations

import functools
import os

import click

from arx.core.config import load_toml, plain
from arx.core.errors import ArxError
from arx.core.llm.client import ChatClient
from arx.core.llm.settings import public_url, resolve_llm
from arx.core.proposers.llm import LLMProposer
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.paths import run_name_of


def arx_errors(fn):
    """Turn an ArxError into a click error with its hint; nothing else is caught."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ArxError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


class RunName(click.ParamType):
    """A run named as ``foo`` or as its branch ``arx/foo``: `git branch` shows the second."""

    name = "NAME"

    def convert(self, value, param, ctx):
        return value if value is None else run_name_of(str(value))


RUN_NAME = RunName()


def make_proposer(ws, quiet: bool):
    """The offline proposer unless an LLM is configured; said in one line either way."""
    config = ws.config
    table = plain(load_toml(ws.path).get("llm", {}))
    settings = resolve_llm(config.llm, config.model, os.environ, overrides=table)
    if settings is None:
        if not quiet:
            click.echo("arx: no LLM configured: offline proposer (Optuna TPE, seeded) "
                       "[set --llm or ARX_API_KEY to use one]", err=True)
        return offline_proposer(config)
    if not quiet:
        click.echo(f"arx: LLM proposer {settings.provider} model {settings.model or '(server default)'} "
                   f"at {public_url(settings.base_url)}", err=True)
    ws.write_llm_settings(settings.record())
    client = ChatClient(settings, ws.path / ws.llm_rel, rel_root=ws.path)
    return LLMProposer(client)
