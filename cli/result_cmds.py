"""Commands about a run's result: `arx apply` takes it home, `arx verify` measures it again,
`arx export` writes it into an Optuna storage for optuna-dashboard."""

from __future__ import annotations

import click

from arx.cli.common import RUN_NAME, arx_errors
from arx.cli.progress import RichReporter
from arx.core.app.apply import apply_plan, plan_apply
from arx.core.app.verify_run import verify_run


@click.command("apply")
@click.argument("name", type=RUN_NAME)
@click.option("--dry-run", is_flag=True, help="Print the diff and the commit message; write "
              "nothing.")
@click.pass_context
@arx_errors
def apply(ctx, name, dry_run):
    """Set run NAME's tuned values in your checkout: one commit on the current branch.

    Only the values the run's best configuration changed are written, with the same structured
    edit its trials got: never the budget, steps or seed arx set, nor runner/, runs/ or
    arx.toml. Refused on uncommitted changes and when the target changed since the run's base."""

    plan = plan_apply(ctx.obj["repo"], name)
    if dry_run:
        click.echo(plan.diff(), nl=False)
        click.echo(f"\nwould commit on {plan.branch}:\n\n{plan.subject}\n\n{plan.body}")
        return
    sha = apply_plan(ctx.obj["repo"], plan)
    click.echo(f"arx: committed {sha[:12]} on {plan.branch}: {plan.subject}")
    click.echo(f"arx: {plan.outcome}")


@click.command("verify")
@click.argument("name", type=RUN_NAME)
@click.option("--seeds", type=int, default=3, show_default=True,
              help="Held-out seeds (repeats without a seed constant) per side.")
@click.pass_context
@arx_errors
def verify(ctx, name, seeds):
    """Train run NAME's baseline and best again on seeds no decision of it used.

    The held-out delta with its standard error, committed on the run's branch (trailer
    Arx-Verified) and shown by `arx status`, `arx report` and `arx apply`."""

    result = verify_run(ctx.obj["repo"], name, seeds, RichReporter())
    if result is None:
        click.echo(f"arx: run {name} kept no change: nothing to verify")


@click.command("export")
@click.argument("name", type=RUN_NAME)
@click.option("--storage", required=True, help="An Optuna storage: an RDB URL "
              "(sqlite:///arx.db, postgresql://...) or a journal file path (arx-journal.log).")
@click.pass_context
@arx_errors
def export(ctx, name, storage):
    """Write run NAME's trials into an Optuna storage, as the study NAME.

    One Optuna trial per arx trial (the baseline and every Level-1 trial): its metric, the
    tunable values, COMPLETE / FAIL / PRUNED, and the iteration, status, reason, hypothesis,
    commit and active Level-2 mechanisms as user attributes. Trials already in the study are
    not written again. Then: optuna-dashboard STORAGE."""

    # optuna comes with it: imported for this command only (0.3 s of every start otherwise)
    from arx.core.app.export import export_run

    result = export_run(ctx.obj["repo"], name, storage)
    click.echo(f"arx: study {result.study} in {result.storage}: {result.added} trials written, "
               f"{result.trials} in all")
    click.echo(f"next: optuna-dashboard {result.storage}")
