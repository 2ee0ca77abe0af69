"""`arx check`, `arx rm`, and what `arx init` says about an adopted script: wiring only."""

from __future__ import annotations

from pathlib import Path

import click

from arx.cli.common import RUN_NAME, arx_errors
from arx.core.app.scaffold import InitResult
from arx.core.direction import contradiction, infer
from arx.core.loop.check import check_target
from arx.core.loop.pruning import describe_curve
from arx.core.repo.git import GitRepo
from arx.core.repo.remove import remove_run

#: at most this many names per line of the init report before "and N more"
_LIST = 12


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST])
    return shown + (f", and {len(items) - _LIST} more" if len(items) > _LIST else "")


def print_adoption(result: InitResult) -> None:
    """What init found in an adopted script: tunable (with range), locked (why), fixed, skipped
    (why), notes and warnings."""
    a = result.adoption
    if a is None:
        return
    tunable = a.space.tunable()
    width = max([len(s.name) for s in a.space.specs.values()] + [8])
    click.echo(f"tunable ({len(tunable)}):")
    for spec in tunable:
        extra = " log" if spec.log else ""
        extra += " power of two" if spec.pow2 else ""
        click.echo(f"  {spec.name:<{width}}  {spec.kind} {spec.domain}{extra}")
    if a.locked:
        click.echo(f"locked ({len(a.locked)}), change with --only/--lock or [params] locked:")
        for name, why in a.locked.items():
            click.echo(f"  {name:<{width}}  {why}")
    fixed = [s.name for s in a.space.specs.values() if not s.locked and not s.has_room]
    if fixed:
        click.echo(f"fixed ({len(fixed)}): {_names(fixed)} (add [params.\"NAME\"] choices = "
                   "[...] to arx.toml to tune one)")
    by_reason: dict[str, list[str]] = {}
    for s in a.skipped:
        key = s.reason if not s.reason.startswith("not a literal") else "not a literal"
        by_reason.setdefault(key, []).append(f"{s.name} (line {s.line})")
    for reason, names in by_reason.items():
        click.echo(f"skipped, {reason}: {_names(names)}")
    for note in a.notes:
        click.echo(f"note: {note}")
    for warning in a.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command()
@click.option("--budget", type=float, help="Training seconds, as `arx run --budget`.")
@click.option("--steps", type=int, help="Training steps, as `arx run --steps`.")
@click.option("--timeout", type=float, help="Hard limit in seconds [as a trial's].")
@click.pass_context
@arx_errors
def check(ctx, budget, steps, timeout):
    """Run the target once exactly as a trial would and say what is wrong, if anything.

    A throwaway worktree of HEAD, the [target] include links, the budget or step count, the
    setup, the command with a trial's timeout and environment. Exits 1 when no metric came out."""

    flags = {"budget": budget, "steps": steps, "timeout": timeout}
    result = check_target(ctx.obj["repo"], flags)
    target = result.config.target
    click.echo(f"arx check: `{target.command}` in a worktree of HEAD"
               + (f" (setup `{target.setup}`)" if target.setup else "")
               + (f", {result.included} untracked path(s) linked" if result.included else ""))
    if result.managed:
        click.echo("  set by arx  " + ", ".join(f"{k}={v!r}" for k, v in result.managed.items()))
    click.echo(f"  tunable     {result.tunable} parameter(s)")
    said = infer(target.metric)
    click.echo(f"  direction   {target.direction} ("
               + (said.why() if said and said.direction == target.direction
                  else "[target] direction in arx.toml") + ")")
    click.echo(f"  runner      {result.sandbox}")
    for warning in [*result.warnings, *filter(None, [contradiction(target.metric,
                                                                   target.direction)])]:
        click.echo(f"  warning     {warning}")
    if result.result is None:
        click.echo(f"  status      setup failed: {result.setup_error}")
    else:
        r = result.result
        click.echo(f"  status      {r.status.value}: {r.reason}")
        click.echo(f"  time        {r.wall_s:.1f} s (timeout {result.timeout_s:.0f} s)")
        if result.ok:
            click.echo(f"  metric      {target.metric} = {r.metric!r} ({target.direction})")
            click.echo(f"  curve       {describe_curve(r, result.config)}")
    if result.error_line:
        click.echo(f"  error       {result.error_line}")
    click.echo(f"  log         {result.log_path}")
    if result.hint:
        click.echo(f"  hint        {result.hint}")
    if not result.ok:
        raise click.exceptions.Exit(1)
    click.echo("arx: the target runs and prints its metric; `arx run` can start")


@click.command("rm")
@click.argument("name", type=RUN_NAME)
@click.option("--force", is_flag=True, help="Stop the run first if it is running.")
@click.pass_context
@arx_errors
def rm(ctx, name, force):
    """Remove run NAME: its branch arx/NAME, its worktree, its logs under .arx/."""

    removed = remove_run(GitRepo(Path(ctx.obj["repo"])), name, force=force)
    click.echo(f"arx: removed run {name}: {', '.join(removed)}")
