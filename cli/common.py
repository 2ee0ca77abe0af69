"""Helpers shared by the command modules: error translation, proposer and executor choice."""

from __future__ import annotations

import functools
import os

import click

from arx.core.errors import ArxError


def arx_errors(fn):
    """Turn an ArxError into a click error with its hint; nothing else is caught."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ArxError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def make_proposer(ws, quiet: bool):
    """The offline proposer unless an LLM is configured; said in one line either way."""
    from arx.core.config import load_toml, plain
    from arx.core.llm.client import ChatClient, public_url, resolve_llm
    from arx.core.proposers.llm import LLMProposer
    from arx.core.proposers.offline import OptunaProposer

    config = ws.config
    table = plain(load_toml(ws.path).get("llm", {}))
    settings = resolve_llm(config.llm, config.model, os.environ, overrides=table)
    if settings is None:
        if not quiet:
            click.echo("arx: no LLM configured: offline proposer (Optuna TPE, seeded) "
                       "[set --llm or ARX_API_KEY to use one]", err=True)
        return OptunaProposer(seed=config.seed)
    if not quiet:
        click.echo(f"arx: LLM proposer {settings.provider} model {settings.model or '(server default)'} "
                   f"at {public_url(settings.base_url)}", err=True)
    ws.write_llm_settings(settings.record())
    client = ChatClient(settings, ws.path / ws.llm_rel, rel_root=ws.path)
    return LLMProposer(client)


def make_executor_for(ws):
    """None for one candidate at a time (trials run in the worktree); else local slots or Ray."""
    from arx.core.config import load_toml, plain
    from arx.core.execution.executor import make_executor

    config = ws.config
    if config.parallel <= 1 and config.executor == "local":
        return None
    table = plain(load_toml(ws.path).get("executor", {}))
    return make_executor(
        config.executor, ws.root / ".arx" / "slots" / ws.name, config.parallel,
        config.address, log_dir=ws.log_dir, pid_dir=ws.root / ".arx" / "pids" / ws.name,
        num_cpus=float(table.get("num_cpus", 1)), num_gpus=float(table.get("num_gpus", 0)),
        runtime_env=table.get("runtime_env"))
