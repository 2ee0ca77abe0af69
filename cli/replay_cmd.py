"""`arx replay BRANCH`: wiring only (the work is arx.core.replay.run).

Exit codes: 0 the run reproduced, 1 it diverged (the report says where), 2 the input is unusable
(no such branch, a corrupt trace or one of another trace version, an unfinished run, other data
than the recorded fingerprint): the message says what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from arx.core.errors import ArxError
from arx.core.replay.run import replay as run_replay


class UnusableInput(click.ClickException):
    """An ArxError from a replay: the branch cannot be replayed as it is."""

    exit_code = 2


@click.command("replay")
@click.argument("branch")
@click.option("--retrain", is_flag=True, help="Also train every recorded measured trial again "
              "and compare the metrics (steps mode: identical; time mode: within --tolerance, "
              "no keep/discard flip).")
@click.option("--only-kept", is_flag=True, help="With --retrain: only the baseline and the "
              "kept trials.")
@click.option("--tolerance", type=float, help="With --retrain: the largest |metric drift| that "
              "passes [time mode: 3 x the baseline's measured sd, else 1% of |baseline "
              "metric|; steps mode: identical unless given].")
@click.option("--force", is_flag=True, help="Replace an existing replay branch of BRANCH "
              "(arx-replay/NAME for arx/NAME).")
@click.option("--allow-version-drift", is_flag=True, help="Replay even when the branch records "
              "other arx, optuna, ruff, libcst or Python versions than this machine's (else "
              "exit 2 naming them); a divergence is then put down to them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON report to this file (for CI artifacts).")
@click.pass_context
def replay(ctx, branch, retrain, only_kept, tolerance, force, allow_version_drift, as_json,
           report_path):
    """Re-run a run branch from its base commit and check that it reproduces.

    Without --retrain nothing trains and no API key is needed: trial results come from the
    branch's trace and LLM answers from its transcripts; resumes and mechanisms added by hand
    are done again where the run recorded them; every decision and commit tree of the replay
    (branch arx-replay/NAME for arx/NAME, kept for inspection) is compared with the original's.
    Exit 0: reproduced; 1: diverged; 2: the branch cannot be replayed."""

    if (only_kept or tolerance is not None) and not retrain:
        raise click.UsageError("--only-kept and --tolerance go with --retrain")
    root = (ctx.obj or {}).get("repo", Path("."))
    say = None if as_json else (lambda line: click.echo(f"arx: {line}", err=True))
    try:
        report = run_replay(root, branch, retrain=retrain, only_kept=only_kept,
                            tolerance=tolerance, force=force,
                            allow_version_drift=allow_version_drift, on_line=say)
    except ArxError as exc:
        data = {"result": "unusable", "error": exc.message, "hint": exc.hint}
        if report_path is not None:
            report_path.write_text(json.dumps(data, indent=2) + "\n")
        if as_json:
            click.echo(json.dumps(data, indent=2))
            ctx.exit(UnusableInput.exit_code)
        raise UnusableInput(str(exc)) from None
    data = report.as_dict()
    if report_path is not None:
        report_path.write_text(json.dumps(data, indent=2) + "\n")
    click.echo(json.dumps(data, indent=2) if as_json else report.render())
    ctx.exit(report.exit_code)
