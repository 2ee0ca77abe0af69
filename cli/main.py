"""The `arx` command line: wiring only. Domain errors become click errors here and nowhere else."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import click
from rich.table import Table

from arx.cli.common import arx_errors, make_proposer
from arx.cli.progress import JsonReporter, QuietReporter, RichReporter, console
from arx.cli.replay_cmd import replay
from arx.cli.report_cmd import ablate, report
from arx.core.levels.level2 import add_by_hand, notes_on_branch
from arx.core.levels.mechanism import Mechanism
from arx.core.loop.engine import default_executor, run_to_end
from arx.core.repo.commits import Trailer
from arx.core.repo.git import GitRepo
from arx.core.repo.runs import history, run_mechanisms, run_names, run_status
from arx.core.repo.scaffold import init_repo
from arx.core.repo.workspace import open_run


def _version() -> str:
    try:
        return metadata.version("arx-autoresearch")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="arx")
@click.option("-C", "--repo", "repo", type=click.Path(file_okay=False, path_type=Path),
              default=".", show_default=True, help="The managed repository.")
@click.pass_context
def cli(ctx: click.Context, repo: Path) -> None:
    """arx: bilevel autoresearch. An LLM-driven loop tunes a training script's constants; git
    records every decision on a run branch."""
    ctx.obj = {"repo": repo}


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--target", "target_file", help="Adopt this script in DIRECTORY instead of the "
              "default GPT target (path relative to DIRECTORY).")
@click.option("--command", help="How to run the target, e.g. 'python train.py' (with --target).")
@click.option("--metric", help="Metric name printed as 'NAME: value' (with --target).")
@click.option("--direction", type=click.Choice(["min", "max"]), default="min", show_default=True)
@click.option("--setup", help="Command run once before each run's baseline (e.g. data prep).")
@click.option("--lock", "locked", multiple=True, help="Constant the search may not change "
              "(repeatable).")
@click.option("--no-git-init", is_flag=True, help="Refuse instead of creating a git repository.")
@click.option("--force", is_flag=True, help="Rewrite an existing arx.toml.")
@click.option("--replay-ci", is_flag=True, help="Also write .github/workflows/arx-replay.yml: "
              "CI replays every pushed arx/* branch.")
@arx_errors
def init(directory, target_file, command, metric, direction, setup, locked, no_git_init, force,
         replay_ci):
    """Create DIRECTORY as a managed repo (default GPT target), or adopt a script with --target."""

    result = init_repo(directory, target_file=target_file, command=command, metric=metric,
                       direction=direction, setup=setup, locked=locked,
                       git_init=not no_git_init, force=force, replay_ci=replay_ci)
    click.echo(f"arx: initialised {result.root} ({result.n_constants} constants, "
               f"{result.n_tunable} tunable) and committed {', '.join(result.written)}")
    click.echo(f"next: cd {directory} && arx run --iterations 8 --budget 20")


@cli.command()
@click.option("--name", help="Run name; the branch is arx/NAME (default: date and a counter).")
@click.option("--resume", metavar="NAME", help="Continue a stopped run from its trace.")
@click.option("--iterations", "-T", type=int, help="Iterations after the baseline [30].")
@click.option("--budget", type=float, help="Training seconds per trial (sets the budget constant).")
@click.option("--steps", type=int, help="Fixed training steps per trial instead of --budget.")
@click.option("--timeout", type=float, help="Hard limit per trial in seconds [budget + margin].")
@click.option("--group", type=click.Choice(["A", "B", "C", "D"], case_sensitive=False),
              help="A: Level 1; B: + Level 1.5; C: + Level 2 (LLM-generated mechanisms, or the "
              "built-in catalog offline); D: + Level 2 from the built-in catalog only [A].")
@click.option("--llm", help="'offline', a preset (deepseek, openai, ollama, vllm, llamacpp) "
              "or a base URL.")
@click.option("--model", help="Model name for --llm.")
@click.option("--seed", type=int, help="Seed of the proposer [0].")
@click.option("--confirm", type=int, help="Extra seeds a would-be keep must also win on [0].")
@click.option("--confirm-margin", type=float, help="Margin the mean must win by when confirming.")
@click.option("--rebaseline", type=int, help="Re-measure the best every K iterations (time mode).")
@click.option("--parallel", type=int, help="Candidates trained at once per iteration; the best "
              "that beats the current best is kept [1].")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where parallel candidates train: local slots or Ray tasks [local].")
@click.option("--address", help="Ray cluster address (with --executor ray): auto, ray://host:10001.")
@click.option("--quiet", is_flag=True, help="Print only the final summary line.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per trial on stdout.")
@click.pass_context
@arx_errors
def run(ctx, name, resume, quiet, as_json, **flags):
    """Run (or resume) a search on a new branch arx/NAME, in a worktree under .arx/."""

    if name and resume:
        raise click.UsageError("--name and --resume exclude each other")
    flags = {k: (v.upper() if k == "group" and v else v) for k, v in flags.items()}
    ws = open_run(ctx.obj["repo"], flags, name=name, resume=resume)
    try:
        proposer = make_proposer(ws, quiet or as_json)
        reporter = JsonReporter() if as_json else QuietReporter() if quiet else RichReporter()
        executor = default_executor(ws)
    except BaseException:
        ws.close(remove_worktree=False)
        raise
    run_to_end(ws, proposer, reporter, executor)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@arx_errors
def status(ctx, name, as_json):
    """Runs with their state, progress, baseline, best and delta."""

    repo = GitRepo(ctx.obj["repo"])
    names = [name] if name else run_names(repo)
    rows = [run_status(repo, n) for n in names]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no runs yet: `arx run` starts one")
        return
    table = Table(title="arx runs")
    for col in ("run", "state", "iter", "baseline", "best", "delta", "keep/discard/crash",
                "tokens", "cost $", "mechanisms"):
        table.add_column(col)
    for r in rows:
        crashes = sum(v for k, v in r.counts.items() if k not in ("keep", "discard"))
        table.add_row(
            r.name, r.state, f"{r.iterations_done}/{r.iterations}", _m(r.baseline), _m(r.best),
            "n/a" if r.delta is None else f"{r.delta:+.6f}",
            f"{r.counts.get('keep', 0)}/{r.counts.get('discard', 0)}/{crashes}",
            str(r.tokens), f"{r.cost_usd:.4f}", ", ".join(r.mechanisms) or "-")
    console().print(table)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--level", help="Only commits of this level (baseline, 1, 1.5, 2, end).")
@click.pass_context
@arx_errors
def log(ctx, name, as_json, level):
    """A run's history from its commit trailers (default: the newest run)."""

    repo = GitRepo(ctx.obj["repo"])
    if not name:
        names = run_names(repo)
        if not names:
            raise click.ClickException("no runs yet: `arx run` starts one")
        name = max(names, key=lambda n: repo.log(f"arx/{n}", max_count=1)[0].authored_at)
    commits = [c for c in history(repo, name)
               if level is None or c.trailers.get(Trailer.LEVEL) == level]
    if as_json:
        click.echo(json.dumps([{"sha": c.sha, "subject": c.subject, **c.trailers}
                               for c in commits], indent=2))
        return
    table = Table(title=f"arx/{name}")
    for col in ("commit", "level", "iter", "change", "metric", "delta"):
        table.add_column(col)
    for c in commits:
        t = c.trailers
        table.add_row(c.sha[:8], t.get(Trailer.LEVEL, ""), t.get(Trailer.ITERATION, ""),
                      c.subject[:70], t.get(Trailer.METRIC, ""), t.get(Trailer.DELTA, ""))
    console().print(table)


def _m(value) -> str:
    return "n/a" if value is None else f"{value:.6f}"


@cli.group()
def mechanism() -> None:
    """Level-2 mechanisms of a run: add your own through the gate, or list them."""


@mechanism.command("add")
@click.argument("patch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--run", "run_name", required=True, help="The run whose runner gets it.")
@click.pass_context
@arx_errors
def mechanism_add(ctx, patch_file, run_name):
    """Apply a structured patch (JSON) to a run's runner: patch, gate, commit or revert.

    PATCH_FILE holds {"kind": "new_helper_class" | "new_method" | "replace_method" |
    "modify_init", "name": ..., "target": ..., "code": ...}, or a mechanism
    {"name", "domain", "description", "patches": [...]}. Exits 1 when it is refused."""

    mech = Mechanism.from_json(patch_file.read_bytes())
    ws = open_run(ctx.obj["repo"], {}, resume=run_name)
    try:
        outcome = add_by_hand(ws, mech, gate_timeout_s=ws.config.gate_timeout,
                              max_bytes=ws.config.max_mechanism_kb * 1024)
    finally:
        ws.close(remove_worktree=True)
    if outcome.active:
        click.echo(f"arx: mechanism {mech.name} passed the gate and is active on arx/{run_name} "
                   f"({outcome.commit[:8]}); `arx run --resume {run_name}` uses it")
        return
    where = f" (committed {outcome.commit[:8]}, reverted {outcome.revert[:8]})" \
        if outcome.commit and outcome.revert else " (nothing written)"
    raise click.ClickException(f"mechanism {mech.name} {outcome.verdict}: {outcome.reason}{where}")


@mechanism.command("list")
@click.option("--run", "run_name", help="One run (default: all).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@arx_errors
def mechanism_list(ctx, run_name, as_json):
    """Mechanisms tried on each run, with gate results, and whether they are active."""

    repo = GitRepo(ctx.obj["repo"])
    rows = []
    for name in [run_name] if run_name else run_names(repo):
        now = {m.name: m.state.value for m in run_mechanisms(repo, name)}
        for note in notes_on_branch(repo, name):
            rows.append({"run": name, **{k: note.get(k) for k in (
                "mechanism", "domain", "source", "cycle", "iteration", "verdict", "reason",
                "commit", "revert")}, "state": now[str(note.get("mechanism") or "?")]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no mechanisms yet (Level 2 runs in --group C or D; or `arx mechanism add`)")
        return
    table = Table(title="arx mechanisms")
    for col in ("run", "mechanism", "domain", "source", "cycle", "verdict", "now", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["run"], r["mechanism"], r["domain"] or "", r["source"] or "",
                      str(r["cycle"] or "-"), r["verdict"], r["state"], (r["reason"] or "")[:60])
    console().print(table)


cli.add_command(report)
cli.add_command(replay)
cli.add_command(ablate)


def main() -> None:
    cli(prog_name="arx", auto_envvar_prefix=None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
