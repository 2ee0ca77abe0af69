"""The `arx` command line: wiring only. Domain errors become click errors here and nowhere else."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import click
from rich.table import Table

from arx.cli.common import RUN_NAME, arx_errors, make_proposer
from arx.cli.progress import JsonReporter, QuietReporter, RichReporter, add_row, console
from arx.cli.replay_cmd import replay
from arx.cli.report_cmd import ablate, report
from arx.cli.result_cmds import apply, export, verify
from arx.cli.script_cmds import check, print_adoption, rm
from arx.core.app.runs import (
    history,
    history_with_decisions,
    run_mechanisms,
    run_names,
    run_status,
)
from arx.core.app.scaffold import init_repo
from arx.core.codemods.bundle import TargetFiles
from arx.core.errors import ArxError
from arx.core.levels.level2 import add_by_hand, notes_on_branch
from arx.core.levels.mechanism import Mechanism
from arx.core.llm.settings import public_url
from arx.core.loop.driver import run_to_end
from arx.core.loop.noeffect import command_overrides
from arx.core.loop.provenance import write_provenance
from arx.core.loop.space import run_space
from arx.core.loop.trials import default_executor
from arx.core.repo.commits import Trailer, verified_short
from arx.core.repo.git import GitRepo
from arx.core.repo.remove import remove_run
from arx.core.repo.workspace import open_run
from arx.core.states import Event, TrialState
from arx.core.textfit import fit


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
@click.option("--metric", help="Metric name: read from a line 'NAME: value' of the output, or "
              "with --metric-regex (with --target).")
@click.option("--metric-regex", help="Regex whose group 1 (else the whole match) is the metric, "
              "e.g. 'val loss ([0-9.]+)' (with --target).")
@click.option("--direction", type=click.Choice(["min", "max"]), help="min: lower is better; "
              "max: higher is better [inferred from --metric's name: accuracy, f1, reward, ... "
              "max; loss, error, perplexity, ... min; refused when the name says neither]")
@click.option("--setup", help="Command run once before each run's baseline (e.g. data prep).")
@click.option("--lock", "locked", multiple=True, help="Parameter the search may not change "
              "(repeatable).")
@click.option("--only", multiple=True, help="Tune only this parameter; lock every other "
              "(repeatable, with --target).")
@click.option("--include", multiple=True, help="Untracked path every trial sees, linked into "
              "its worktree (repeatable, with --target; default: proposed from the script).")
@click.option("--no-git-init", is_flag=True, help="Refuse instead of creating a git repository.")
@click.option("--force", is_flag=True, help="Rewrite an existing arx.toml.")
@click.option("--replay-ci", is_flag=True, help="Also write .github/workflows/arx-replay.yml: "
              "CI replays every pushed arx/* branch.")
@arx_errors
def init(directory, target_file, command, metric, metric_regex, direction, setup, locked, only,
         include, no_git_init, force, replay_ci):
    """Create DIRECTORY as a managed repo (default GPT target), or adopt a script with --target.

    An adopted script's parameters are its top-level `NAME = literal` constants, argparse
    defaults (--lr), config class fields (Args.lr) and module-level dict entries (params.lr);
    init prints which are tunable, locked (and why) or skipped (and why)."""

    result = init_repo(directory, target_file=target_file, command=command, metric=metric,
                       direction=direction, setup=setup, locked=locked, only=only,
                       metric_regex=metric_regex, include=list(include) if include else None,
                       git_init=not no_git_init, force=force, replay_ci=replay_ci)
    what = "parameters" if result.adoption else "constants"
    click.echo(f"arx: initialised {result.root} ({result.n_constants} {what}, "
               f"{result.n_tunable} tunable) and committed {', '.join(result.written)}")
    if result.direction_note.startswith("--direction"):  # given against what the name says
        click.echo(f"arx: warning: {result.direction_note}", err=True)
    elif result.direction_note:
        click.echo(f"arx: {result.direction_note}")
    print_adoption(result)
    click.echo(f"next: cd {directory} && arx check && {result.next_command}"
               if result.adoption else f"next: cd {directory} && {result.next_command}")


@cli.command()
@click.option("--name", help="Run name; the branch is arx/NAME (default: date and a counter).")
@click.option("--resume", type=RUN_NAME, help="Continue a stopped run from its trace.")
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
@click.option("--remeasure-after", type=float, help="Time mode: re-measure the best once its "
              "last measurement is this many seconds old; 0 never [3600].")
@click.option("--noise", help="The metric's spread: auto (measure it on the baseline before "
              "deciding anything), off, or a standard deviation [auto].")
@click.option("--verify", type=int, help="Held-out seeds the baseline and the best are trained "
              "on again when the run ends (no decision used them); 0 turns it off [3].")
@click.option("--prune", type=click.Choice(["on", "off"]), help="Stop a trial early when its "
              "learning curve trails the best's by more than the curve's noise (the runner's "
              "prune rule; needs a target that prints its metric as it trains) [on; off, and on "
              "refused, with --parallel > 1 or --executor ray].")
@click.option("--parallel", type=int, help="Candidates trained at once per iteration; the best "
              "that beats the current best is kept [1].")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where parallel candidates train: local slots or Ray tasks [local].")
@click.option("--address", help="Ray cluster address (with --executor ray): auto, ray://host:10001.")
@click.option("--take-target", is_flag=True, help="With --resume: use arx.toml's [target] "
              "(command, setup, include, ...) instead of the one the run started with.")
@click.option("--quiet", is_flag=True, help="Print only the final summary line.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per trial on stdout.")
@click.option("--storage", help="Also write every trial into this Optuna storage as it goes "
              "(sqlite:///arx.db, or a journal file path), a study per run, for "
              "optuna-dashboard; pass it again with --resume (no trial is written twice).")
@click.pass_context
@arx_errors
def run(ctx, name, resume, take_target, quiet, as_json, storage, **flags):
    """Run (or resume) a search on a new branch arx/NAME, in a worktree under .arx/."""

    if name and resume:
        raise click.UsageError("--name and --resume exclude each other")
    if take_target and not resume:
        raise click.UsageError("--take-target goes with --resume NAME")
    flags = {k: (v.upper() if k == "group" and v else v) for k, v in flags.items()}
    ws = open_run(ctx.obj["repo"], flags, name=name, resume=resume, take_target=take_target)
    try:
        write_provenance(ws, _command_line(ctx))
        proposer = make_proposer(ws, quiet or as_json)
        reporter = JsonReporter() if as_json else QuietReporter() if quiet else \
            RichReporter(log_dir=ws.log_dir)
        if storage:
            # optuna comes with it: imported for this only (0.3 s of every start otherwise)
            from arx.core.app.export import live_export

            reporter = live_export(ws, storage, reporter)
        executor = default_executor(ws)
        for notice in ws.notices:
            click.echo(f"arx: {notice}", err=True)
        target = ws.config.target
        names = [s.name for s in _tunable(ws)]
        for warning in command_overrides(target.command, target.file, names, ws.path):
            click.echo(f"arx: warning: {warning}", err=True)
    except BaseException:
        ws.close(remove_worktree=False)
        _drop_unstarted(ws, resume)
        raise
    try:
        run_to_end(ws, proposer, reporter, executor)
    except BaseException:
        _drop_unstarted(ws, resume)
        raise


def _drop_unstarted(ws, resume) -> None:
    """A failed start leaves nothing to resume: remove the new run it made."""
    if not resume and not history(ws.repo, ws.name):
        try:
            remove_run(ws.repo, ws.name)
            click.echo(f"arx: removed run {ws.name}: it stopped before its baseline was "
                       "recorded", err=True)
        except ArxError:
            pass


def _tunable(ws):
    """The run's tunable parameters (for the command-line warnings)."""
    source = TargetFiles(ws.path, ws.config.target.paths()).read()
    return run_space(ws.path, source, ws.config).tunable()


def _command_line(ctx: click.Context) -> list[str]:
    """The command as given (its options as click parsed them), for the run's provenance."""
    args = ["arx", ctx.info_name or "run"]
    for key, value in ctx.params.items():
        if value is None or value is False:
            continue
        option = "--json" if key == "as_json" else "--" + key.replace("_", "-")
        value = public_url(value) if key == "storage" else value  # never a password
        args += [option] if value is True else [option, str(value)]
    return args


@cli.command()
@click.argument("name", type=RUN_NAME, required=False)
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
    for col in ("run", "state", "iter", "baseline", "best", "delta (in search)",
                "held-out delta", "noise (sd)", "keep/discard/other", "re-run",
                "confirm failed", "tokens", "cost $", "mechanisms"):
        table.add_column(col)
    for r in rows:
        lost = (TrialState.DISCARD, TrialState.NO_EFFECT, TrialState.PRUNED)  # no commit
        discards = sum(r.counts.get(k, 0) for k in lost)
        other = sum(v for k, v in r.counts.items() if k not in (TrialState.KEEP, *lost))
        noise = "-" if r.noise_sd is None else f"{r.noise_sd:.4g}" + (
            f" (n={r.noise_n})" if r.noise_n else " (given)")
        add_row(
            table, r.name, r.state, f"{r.iterations_done}/{r.iterations}", _m(r.baseline), _m(r.best),
            "n/a" if r.delta is None else f"{r.delta:+.6f}", verified_short(r.verified), noise,
            f"{r.counts.get('keep', 0)}/{discards}/{other}", str(r.reruns),
            str(r.confirm_failed), str(r.tokens), f"{r.cost_usd:.4f}", ", ".join(r.mechanisms) or "-")
    console().print(table)


@cli.command()
@click.argument("name", type=RUN_NAME, required=False)
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
    commits = [c for c in history_with_decisions(repo, name)
               if level is None or c.trailers.get(Trailer.LEVEL) == level]
    if as_json:  # a decision without a commit (a step-aside) has "sha": null and its "event"
        click.echo(json.dumps([{"sha": c.sha or None, "subject": c.subject, **c.trailers,
                                **({} if c.sha else {"event": Event.STEP_ASIDE.value})}
                               for c in commits], indent=2))
        return
    table = Table(title=f"arx/{name}")
    for col in ("commit", "level", "iter", "change", "metric", "delta"):
        table.add_column(col)
    for c in commits:
        t = c.trailers
        add_row(table, c.sha[:8] or "(event)", t.get(Trailer.LEVEL, ""), t.get(Trailer.ITERATION, ""),
                fit(c.subject, 70), t.get(Trailer.METRIC, ""), t.get(Trailer.DELTA, ""))
    console().print(table)


def _m(value) -> str:
    return "n/a" if value is None else f"{value:.6f}"


@cli.group()
def mechanism() -> None:
    """Level-2 mechanisms of a run: add your own through the gate, or list them."""


@mechanism.command("add")
@click.argument("patch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--run", "run_name", type=RUN_NAME, required=True, help="The run whose runner gets it.")
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
@click.option("--run", "run_name", type=RUN_NAME, help="One run (default: all).")
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
        add_row(table, r["run"], r["mechanism"], r["domain"] or "", r["source"] or "",
                str(r["cycle"] or "-"), r["verdict"], r["state"], r["reason"] or "")
    console().print(table)


cli.add_command(report)
cli.add_command(replay)
cli.add_command(ablate)
cli.add_command(check)
cli.add_command(rm)
cli.add_command(apply)
cli.add_command(verify)
cli.add_command(export)


def main() -> None:
    cli(prog_name="arx", auto_envvar_prefix=None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
