"""``arx check``: run the target once exactly as a trial would, before an overnight run.

A throwaway worktree of HEAD (``paths.check_worktree_path``, branch ``CHECK_BRANCH``), the
``[target] include`` links, the budget or step count a run would set, ``[target] setup``, the
command with the trial's timeout and environment: the same ``LiveTrials`` a run uses. The result
says what was parsed, how long it took, and what is wrong (the error line of the log, a hint,
and warnings about flags or config files that override tuned parameters). Nothing is committed;
the worktree and branch are removed at the end.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.codemods.bundle import TargetFiles
from arx.core.codemods.constants import apply_changes
from arx.core.config import CONFIG_FILE, RunConfig, load_toml, resolve
from arx.core.errors import RepoError, RunError
from arx.core.execution.trial import ExecStatus, TrialResult
from arx.core.levels.worker import fence_report
from arx.core.llm.settings import secret_names_in
from arx.core.loop.diagnose import failure_hint, last_error, metric_regex_hint
from arx.core.loop.noeffect import command_overrides
from arx.core.loop.space import run_space
from arx.core.loop.trials import LiveTrials, TrialKey, TrialRequest
from arx.core.repo.git import GitRepo
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import CHECK_BRANCH, CHECK_KEY, LocalPaths, check_worktree_path
from arx.core.repo.workspace import link_included
from arx.core.states import TrialKind

__all__ = ["CheckResult", "check_target"]


@dataclass(frozen=True)
class CheckResult:
    """What one check found. ``result`` is None when the setup failed (``setup_error``)."""

    config: RunConfig
    result: TrialResult | None
    timeout_s: float
    log_path: Path
    #: constants arx set as a run would (budget / steps)
    managed: Mapping[str, Any]
    tunable: int
    included: int
    warnings: list[str] = field(default_factory=list)
    setup_error: str | None = None
    error_line: str | None = None
    hint: str | None = None
    #: how the runner worker is fenced in here (``worker.fence_report``)
    sandbox: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.status is ExecStatus.OK


def _clear(repo: GitRepo, path: Path) -> None:
    if path.exists():
        try:
            repo.remove_worktree(path)
        except RepoError:
            pass
    if repo.branch_exists(CHECK_BRANCH):
        repo.delete_branch(CHECK_BRANCH)


def check_target(root: Path, flags: Mapping[str, Any],
                 env: Mapping[str, str] | None = None) -> CheckResult:
    """Run the target once as a trial of a new run would run (see the module docstring)."""
    repo = GitRepo(root)
    root = repo.root
    if repo.head_sha() is None:
        raise RepoError(f"{root} has no commits", hint="run `arx init` first")
    doc = load_toml(root)
    config = resolve(CHECK_KEY, doc, flags, os.environ if env is None else env)
    warnings = [f"{p} has uncommitted changes: the check, like a run, uses the committed one"
                for p in repo.dirty_paths([CONFIG_FILE, *config.target.paths()])]
    local = LocalPaths(root, CHECK_KEY)
    path = check_worktree_path(root)
    with RunLock(root, CHECK_KEY):
        _clear(repo, path)
        tree = repo.add_worktree(path, CHECK_BRANCH, "HEAD")
        try:
            return _check(repo, tree, config, local, warnings)
        finally:
            _clear(repo, path)


def _check(repo: GitRepo, tree: GitRepo, config: RunConfig, local: LocalPaths,
           warnings: list[str]) -> CheckResult:
    included = link_included(repo, tree.root, config.target.include)
    files = TargetFiles(tree.root, config.target.paths())
    source = files.read()
    space = run_space(tree.root, source, config)  # arx.toml's [params] must read, too
    managed = config.managed_values()
    source = apply_changes(source, managed, config.target.file)
    files.write(source)
    warnings += command_overrides(config.target.command, config.target.file,
                                  [s.name for s in space.tunable()], tree.root)
    trials = LiveTrials(tree.root, config.target, local.log_dir, local.pid_path,
                        secret_names_in(tree.root))
    timeout = config.trial_timeout()
    log_path = local.log_dir / "check.log"
    common = dict(config=config, timeout_s=timeout, managed=managed,
                  tunable=len(space.tunable()), included=len(included), warnings=warnings,
                  sandbox=fence_report())
    try:
        trials.prepare()
    except RunError as exc:
        tail = exc.message.partition("\n")[2]
        return CheckResult(result=None, log_path=local.log_dir / "setup.log",
                           setup_error=exc.message.partition("\n")[0],
                           error_line=last_error(tail),
                           hint=failure_hint(tail, repo.root, tree.root), **common)
    result = trials.run(TrialRequest(TrialKey(0, TrialKind.BASELINE), {}, source, timeout,
                                     "check"))
    if result.status is ExecStatus.OK:
        return CheckResult(result=result, log_path=log_path, **common)
    hint = metric_regex_hint(result.log_tail, config.target.metric) \
        if result.status is ExecStatus.NO_METRIC and not config.target.metric_regex else None
    return CheckResult(result=result, log_path=log_path, error_line=last_error(result.log_tail),
                       hint=hint or failure_hint(result.log_tail, repo.root, tree.root),
                       **common)
