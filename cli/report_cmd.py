"""`arx report` and `arx ablate`: wiring only (the work is in arx.core.analysis.report and .ablate)."""

from __future__ import annotations

from pathlib import Path

import click

from arx.cli.common import RUN_NAME, arx_errors, make_proposer
from arx.core.analysis.ablate import run_ablation, split_list, to_markdown
from arx.core.loop.trials import default_executor


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "figures need matplotlib, which is not installed\n"
            "  hint: pip install matplotlib") from None


@click.command()
@click.argument("runs", nargs=-1, type=RUN_NAME)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("arx-report.png"), show_default=True,
              help="The figure (.png, .svg, .pdf; a .md summary is written beside it), or one "
              ".html page with the figure embedded.")
@click.pass_context
@arx_errors
def report(ctx, runs, out):
    """Figures and a summary of RUNS (default: every run): metric per iteration, Level 1.5 and
    Level 2 markers, what each trial changed, kept changes with hypotheses, tokens and cost."""
    _matplotlib()
    # imported here: it loads matplotlib, which `arx status` and the other commands must not pay for
    from arx.core.analysis.report import write_report

    result = write_report(ctx.obj["repo"], runs, out)
    written = [p for p in (result.image_path, result.summary_path) if p]
    click.echo(f"arx: report of {len(result.runs)} run(s): " + ", ".join(map(str, written)))


@click.command()
@click.option("--groups", default="A,B,C", show_default=True,
              help="Groups to compare: A (Level 1), B (+ Level 1.5), C (+ Level 2), "
              "D (+ mechanism catalog).")
@click.option("--repeats", type=int, default=3, show_default=True,
              help="Runs per group; repeat r uses seed r in every group.")
@click.option("--iterations", "-T", type=int, default=30, show_default=True,
              help="Iterations per run after the baseline.")
@click.option("--baseline", "baselines", default="",
              help="Extra rows without an LLM: 'optuna', 'random' or both (comma-separated).")
@click.option("--name", "prefix", default="ablate", show_default=True,
              help="Prefix of the run names: PREFIX-A-r1, ... Run again to resume.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Path stem of the table and figure [PREFIX-ablation]: .csv, .md, .png.")
@click.option("--llm", help="As `arx run --llm` for the group rows.")
@click.option("--model", help="Model name for --llm.")
@click.option("--budget", type=float, help="Training seconds per trial.")
@click.option("--steps", type=int, help="Fixed training steps per trial instead of --budget.")
@click.option("--timeout", type=float, help="Hard limit per trial in seconds.")
@click.option("--parallel", type=int, help="Candidates trained at once per iteration.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where parallel candidates train (with --parallel).")
@click.option("--address", help="Ray cluster address (with --executor ray).")
@click.option("--quiet", is_flag=True, help="Print only the table.")
@click.pass_context
@arx_errors
def ablate(ctx, groups, repeats, iterations, baselines, prefix, out, quiet, **flags):
    """Run each group REPEATS times from the same base and print the paper's Table 2: each
    repeat's delta (best - baseline), mean ± std per group, and the ratio to group A."""
    _matplotlib()
    # imported here: it loads matplotlib, which `arx status` and the other commands must not pay for

    result = run_ablation(
        ctx.obj["repo"], groups=split_list(groups), repeats=repeats, iterations=iterations,
        baselines=split_list(baselines), prefix=prefix, out=out, flags=flags,
        proposer_for=lambda ws: make_proposer(ws, quiet=True), executor_for=default_executor,
        echo=None if quiet else (lambda text: click.echo(text, err=True)),
    )
    click.echo(to_markdown(result), nl=False)
    click.echo(f"written: {result.csv_path}, {result.md_path}, {result.figure_path}")
