"""``arx apply NAME``: the one way a result leaves its run branch.

A run branch holds more than the result: the step count arx wrote into the target, the runner
and its Level-2 mechanisms, the trace and transcripts. ``git merge arx/NAME`` brings all of it.
``plan_apply`` takes only the tuned values: the settings whose value in the run's best
configuration differs from its baseline, minus the constants arx manages (budget, steps, seed),
and rewrites them in the target's files of the user's checkout (the script and ``[target]
files``, each by its own surface) with the same structured edit a trial got (``codemods.constants.apply_changes``), then checks that exactly those values changed.
``apply_plan`` makes it one commit on the current branch, whose message names the run, its
branch, every change and the held-out verified delta.

Refused, with what to do: a run that is still running or kept nothing, a checkout with
uncommitted changes to tracked files, a detached HEAD or a run branch checked out, and a target
that differs from the one the run started from (its base): the values were tuned for that
script, and the hint shows the diff.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arx.core.codemods import bundle
from arx.core.codemods.bundle import TargetFiles
from arx.core.codemods.constants import apply_changes, discover_constants
from arx.core.config import RunConfig
from arx.core.errors import ConfigError, PatchError, RepoError
from arx.core.loop import verify
from arx.core.loop.trace import TraceRecord, best_of, trace_events
from arx.core.repo import commits
from arx.core.repo.git import GitRepo
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import BRANCH_PREFIX, RunFiles, branch_of
from arx.core.states import Event, Level, TrialState

__all__ = ["ApplyPlan", "apply_plan", "plan_apply"]


@dataclass(frozen=True)
class ApplyPlan:
    """What ``arx apply`` would commit: the changed file, its text before and after, the
    changes (name -> (before, after)), and the commit message."""

    run: str
    target_file: str
    before_text: str
    after_text: str
    changes: Mapping[str, tuple[Any, Any]]
    subject: str
    body: str
    trailers: Mapping[str, str]
    branch: str
    #: what the result is worth: the held-out verification's line, or that it has none
    outcome: str
    #: every file of the target, the script first (``[target] files``); the texts above are
    #: then bundles of them (``codemods.bundle``)
    paths: tuple[str, ...] = ()

    def texts(self, which: str) -> dict[str, str]:
        """path -> text of each file of the target, ``before`` or ``after``."""
        text = self.before_text if which == "before" else self.after_text
        return bundle.unpack(text) if bundle.is_bundle(text) else {self.target_file: text}

    def changed_paths(self) -> list[str]:
        """The files the tuned values change (the ones the commit touches)."""
        before, after = self.texts("before"), self.texts("after")
        return [p for p in after if before.get(p) != after[p]]

    def diff(self) -> str:
        before, after = self.texts("before"), self.texts("after")
        return "".join("".join(difflib.unified_diff(
            before[p].splitlines(keepends=True), after[p].splitlines(keepends=True),
            f"a/{p}", f"b/{p}")) for p in self.changed_paths())


def _run_facts(repo: GitRepo, name: str) -> tuple[RunConfig, list[dict], str]:
    """(the run's stored config, its trace events, the sha of its base) from its branch."""
    branch = branch_of(name)
    if not repo.branch_exists(branch):
        raise RepoError(f"no run named {name!r}", hint="`arx status` lists the runs")
    stored = repo.show(branch, RunFiles(name).config_rel)
    if stored is None:
        raise RepoError(f"run {name} has no stored config on {branch}",
                        hint="the run stopped before its baseline; there is nothing to apply")
    config = RunConfig.from_json(stored)
    log = repo.log(branch)
    baseline = next((c for c in reversed(log) if c.trailers.get(commits.Trailer.RUN) == name
                     and commits.level_of(c) is Level.BASELINE), None)
    parents = repo.log(f"{baseline.sha}^", max_count=1) if baseline else []
    if not parents:
        raise RepoError(f"run {name} has no baseline commit with a parent on {branch}",
                        hint="the run stopped before its baseline; there is nothing to apply")
    return config, trace_events(repo, name), parents[0].sha


def tuned_changes(records: list[TraceRecord], config: RunConfig) -> dict[str, tuple[Any, Any]]:
    """name -> (baseline value, best value) for every setting the run's best changed, the
    constants arx manages (budget, steps, seed) left out."""
    base = next((r for r in records if r.state is TrialState.BASELINE), None)
    best = best_of(records)
    if base is None or best is None:
        return {}
    managed = set(config.target.managed_constants())
    before, after = dict(base.get("config") or {}), dict(best.get("config") or {})
    return {n: (before.get(n), v) for n, v in after.items()
            if n not in managed and before.get(n) != v}


def plan_apply(root: Path | str, name: str) -> ApplyPlan:
    """What applying run ``name`` to the checkout at ``root`` would commit (nothing written)."""
    repo = GitRepo(root)
    if RunLock(repo.root, name).is_held():
        raise RepoError(f"run {name} is running", hint="apply it once it has finished")
    config, events, base = _run_facts(repo, name)
    branch = repo.current_branch()
    if branch is None or branch.startswith(BRANCH_PREFIX):
        raise RepoError(f"{'a detached HEAD' if branch is None else branch} is checked out",
                        hint="check out the branch to take the result to (e.g. `git switch "
                             "main`), then `arx apply` again")
    dirty = repo.dirty_paths(untracked=False)
    if dirty:
        raise RepoError(f"uncommitted changes in {', '.join(dirty[:5])}"
                        + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else ""),
                        hint="commit or stash them (`git stash`), then `arx apply` again")
    records = [TraceRecord(e) for e in events if e.get("event") == Event.TRIAL]
    changes = tuned_changes(records, config)
    if not changes:
        raise ConfigError(f"run {name} kept no change: there is nothing to apply",
                          hint=f"`arx log {name}` shows what it tried")
    file = config.target.file
    paths = config.target.paths()
    for path in paths:
        started = repo.show(base, path)
        current = (repo.root / path).read_text() if (repo.root / path).is_file() else None
        if current is None or started is None:
            raise RepoError(f"{path} is not in "
                            f"{'this checkout' if current is None else 'the base'}",
                            hint=f"run {name} tuned {path}; apply it where that file is")
        if current != started:
            values = ", ".join(f"{n} {commits.fmt_value(a)}->{commits.fmt_value(b)}"
                               for n, (a, b) in changes.items())
            raise RepoError(
                f"{path} changed since run {name} started from {base[:12]}: its values were "
                f"tuned for that version of the script ({values})",
                hint=f"see the difference with `git diff {base[:12]} -- {path}`; set the values "
                     "by hand if they still apply, or start a new run from here")
    current = TargetFiles(repo.root, paths).read()
    try:
        after = apply_changes(current, {n: v for n, (_, v) in changes.items()}, file)
    except PatchError as exc:
        raise PatchError(f"the tuned values of run {name} do not fit {file}: {exc.message}",
                         hint=exc.hint) from None
    _check_only_tuned(current, after, changes, file)
    subject, body, trailers, outcome = _message(name, config, changes, events)
    return ApplyPlan(name, file, current, after, changes, subject, body, trailers, branch,
                     outcome, paths)


def _check_only_tuned(before: str, after: str, changes: Mapping[str, tuple[Any, Any]],
                      file: str) -> None:
    """The rewritten file sets exactly the tuned values and nothing else differs."""
    old = {c.name: c.value for c in discover_constants(before, file)}
    new = {c.name: c.value for c in discover_constants(after, file)}
    differ = {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}
    wrong = [n for n, (_, v) in changes.items() if new.get(n) != v]
    if differ != set(changes) or wrong:
        raise PatchError(f"applying the tuned values to {file} would change "
                         f"{', '.join(sorted(differ ^ set(changes)) or wrong)} too",
                         hint="apply them by hand (`--dry-run` lists them)")


def _message(name: str, config: RunConfig, changes: Mapping[str, tuple[Any, Any]],
             events: list[dict]) -> tuple[str, str, dict[str, str], str]:
    shown = ", ".join(f"{n} {commits.fmt_value(a)}->{commits.fmt_value(b)}"
                      for n, (a, b) in changes.items())
    subject = f"arx apply {name}: {shown}"
    paths = config.target.paths()
    where = ", ".join(dict.fromkeys(bundle.file_of(n, paths)[0] for n in changes))
    if len(subject) > 100:
        subject = f"arx apply {name}: {len(changes)} tuned values of {where}"
    held = verify.latest(events)
    best = best_of([TraceRecord(e) for e in events if e.get("event") == Event.TRIAL])
    lines = [f"The best configuration of arx run {name} (branch {branch_of(name)}, iteration "
             f"{best.iteration if best else '?'}), applied to {where}:", ""]
    lines += [f"- {n}: {commits.fmt_value(a)} -> {commits.fmt_value(b)}"
              for n, (a, b) in changes.items()]
    metric = config.target.metric
    outcome = f"{metric}: {held.describe()}" if held is not None else (
        f"{metric}: not verified on held-out seeds (`arx verify {name}` trains the baseline and "
        "this configuration on seeds the run never used)")
    lines += ["", outcome + "."]
    lines += ["", "Only these values changed; the budget, steps and seed arx set for its "
                  "trials, its runner and its records stay on the run branch."]
    trailers = {commits.Trailer.APPLIED: name,
                commits.Trailer.CHANGES: json.dumps({n: b for n, (_, b) in changes.items()},
                                                    sort_keys=True, default=str)}
    if held is not None:
        trailers[commits.Trailer.VERIFIED] = commits.verified_text(held.event(name, 0))
    return subject, "\n".join(lines), trailers, outcome


def apply_plan(root: Path | str, plan: ApplyPlan) -> str:
    """Write the plan's files and commit the ones it changes alone on the current branch;
    returns the sha."""
    repo = GitRepo(root)
    files = TargetFiles(repo.root, plan.paths or (plan.target_file,))
    if files.read() != plan.before_text or repo.current_branch() != plan.branch:
        raise RepoError(f"{', '.join(files.paths)} or the branch changed while arx apply ran",
                        hint="run `arx apply` again")
    files.write(plan.after_text)
    sha = repo.commit(plan.changed_paths(), plan.subject, plan.body, dict(plan.trailers))
    if sha is None:  # pragma: no cover - plan_apply refuses a plan that changes nothing
        raise RepoError("nothing was committed", hint="the file already holds these values")
    return sha
