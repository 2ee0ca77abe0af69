"""The original side of a replay: a run branch read back from git, checked before anything runs.

``load_recording`` finds the run's ``baseline`` commit (the first commit with ``Arx-Run: <name>``
and ``Arx-Level: baseline``) and its parent, the base the replay starts from; reads the trace of
the branch tip (every line must be JSON of this arx's trace version), the ``config.json`` and
``llm-settings.json`` the baseline committed, and the LLM transcripts of the tip. Anything that
makes a faithful replay impossible is a ``ReplayError`` (or ``TraceError``): `arx replay` exits 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arx.core.config import RunConfig
from arx.core.errors import ArxError, TraceError
from arx.core.loop.provenance import read_provenance
from arx.core.loop.trace import TRACE_VERSION, load_line
from arx.core.repo.commits import Trailer, is_revert, level_of
from arx.core.repo.git import GitRepo
from arx.core.repo.gittext import CommitRecord
from arx.core.repo.paths import BRANCH_PREFIX, RunFiles
from arx.core.states import Event, Level, Source, TrialKind

#: trace statuses of trials that never ran a command (nothing to serve or retrain)
_NOT_RUN = ("invalid_proposal", "interrupted")


class ReplayError(ArxError):
    """The branch cannot be replayed as it is (unusable input): `arx replay` exits 2."""


@dataclass(frozen=True)
class Divergence:
    """Where the replay and the original part ways, with both sides (trimmed for reading)."""

    step: str
    what: str
    field: str | None = None
    original: Any = None
    replay: Any = None
    #: names of the two sides (an integrity check compares a commit with the branch tip)
    sides: tuple[str, str] = ("original", "replay")
    index: int | None = None  # the step's number in the original's timeline, from 1

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "what": self.what, "field": self.field,
                "original": self.original, "replay": self.replay, "sides": list(self.sides),
                "index": self.index}


class DivergenceFound(Exception):
    """Raised inside the replayed loop: the replay cannot go on (no recorded answer)."""

    def __init__(self, divergence: Divergence):
        super().__init__(divergence.what)
        self.divergence = divergence


class ReplayGit(GitRepo):
    """The few read-only views a replay needs, on top of the one owner of git."""

    def rev(self, rev: str) -> str | None:
        status, out, _ = self._git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}", ok=(0, 1))
        return out.strip() if status == 0 and out.strip() else None

    def blob(self, rev: str, path: str) -> bytes | None:
        status, out, _ = self._git("cat-file", "blob", f"{rev}:{path}", ok=None, text=False,
                                   strip=False)
        return out if status == 0 else None

    def entries(self, rev: str, under: str) -> dict[str, str]:
        """path -> blob id of the files under ``under`` at ``rev``."""
        _, out, _ = self._git("ls-tree", "-r", "-z", rev, "--", under, strip=False)
        found = {}
        for entry in out.split("\0"):
            meta, _, path = entry.partition("\t")
            if path:
                found[path] = meta.split()[2]
        return found

    def object_bytes(self, oid: str) -> bytes:
        return self._git("cat-file", "blob", oid, text=False, strip=False)[1]

    def changed_paths(self, a: str, b: str) -> list[str]:
        """Paths whose content differs between the trees of commits ``a`` and ``b``."""
        _, out, _ = self._git("diff-tree", "-r", "-z", "--no-renames", "--name-only", a, b,
                              strip=False)
        return sorted(p for p in out.split("\0") if p)

    def delete_branch(self, name: str) -> None:
        self._git("branch", "-D", "--", name)


def norm(value: Any) -> Any:
    """A value as the trace stores it (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr))


@dataclass
class Recording(RunFiles):
    """A finished run as its branch records it."""

    name: str
    branch: str  # the rev the user named, resolved
    tip: str
    baseline: str
    base: str
    commits: list[CommitRecord]  # base..tip, oldest first (the baseline first)
    trace_bytes: bytes
    events: list[dict[str, Any]]
    config_bytes: bytes
    config: RunConfig
    settings_bytes: bytes | None
    #: (path relative to the worktree, file bytes, parsed JSON), in request order
    transcripts: list[tuple[str, bytes, dict[str, Any]]]
    proposer: str
    trials: dict[tuple[int, str, int, int], Mapping[str, Any]] = field(default_factory=dict)
    #: the lines of ``runs/<name>/provenance.jsonl`` at the tip (none on older branches)
    provenance: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uses_llm(self) -> bool:
        return self.proposer == "llm"

    def trial(self, iteration: int, kind: str, seq: int = 0,
              attempt: int = 0) -> Mapping[str, Any] | None:
        return self.trials.get((int(iteration), kind, int(seq), int(attempt)))

    def records(self) -> list[Mapping[str, Any]]:
        return [e for e in self.events if e.get("event") == Event.TRIAL]


def _resolve(repo: ReplayGit, branch: str) -> tuple[str, str]:
    candidates = [branch]
    if not branch.startswith(BRANCH_PREFIX):
        candidates.append(BRANCH_PREFIX + branch)
    candidates += [f"origin/{c}" for c in list(candidates)]
    for cand in candidates:
        sha = repo.rev(cand)
        if sha:
            return cand, sha
    raise ReplayError(
        f"no branch {branch!r} in {repo.root}",
        hint="`arx status` lists the runs; in CI, check out with full history "
             "(actions/checkout with fetch-depth: 0)",
    )


def parse_trace(data: bytes, where: str) -> list[dict[str, Any]]:
    """Every line of a committed trace: JSON of this arx's trace version, or TraceError."""
    events = []
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = load_line(line)
        except ValueError as exc:
            raise TraceError(
                f"{where}:{lineno} is not a JSON object ({exc}): the trace is corrupt",
                hint="restore it from an earlier commit of the branch (`git log -- runs/`)",
            ) from None
        if not isinstance(obj, dict) or obj.get("v") != TRACE_VERSION:
            version = obj.get("v") if isinstance(obj, dict) else None
            raise TraceError(
                f"{where}:{lineno} has trace version {version!r}; this arx reads and replays "
                f"trace version {TRACE_VERSION} only",
                hint="replay the branch with the arx release that made the run "
                     "(`pip install arx-autoresearch==<that version>`); traces are never "
                     "converted, so the audit log stays as it was written",
            )
        events.append(obj)
    return events


def load_recording(repo: ReplayGit, branch: str) -> Recording:
    rev, tip = _resolve(repo, branch)
    log = repo.log(tip)  # newest first
    name = next((c.trailers[Trailer.RUN] for c in log if c.trailers.get(Trailer.RUN)), None)
    if name is None:
        raise ReplayError(f"{rev} is not an arx run branch (no commit has an Arx-Run trailer)",
                          hint="name a branch made by `arx run` (arx/NAME)")
    baseline = next((c for c in reversed(log) if c.trailers.get(Trailer.RUN) == name
                     and level_of(c) is Level.BASELINE), None)
    if baseline is None:
        raise ReplayError(f"run {name!r} on {rev} has no baseline commit",
                          hint="the run stopped before its baseline was measured; there is "
                               "nothing to replay")
    base = repo.rev(baseline.sha + "^")
    if base is None:
        raise ReplayError(f"the baseline commit {baseline.sha[:12]} of {rev} has no parent",
                          hint="a run branch starts from the commit `arx run` branched from")
    commits = list(reversed(repo.log(f"{base}..{tip}")))
    files = RunFiles(name)
    where = f"{rev}:{files.trace_rel}"
    trace_bytes = repo.blob(tip, files.trace_rel)
    if trace_bytes is None:
        raise TraceError(f"{rev} has no {files.trace_rel}", hint="the branch is not a "
                         "complete arx run; restore the trace from an earlier commit")
    events = parse_trace(trace_bytes, where)
    config_bytes = repo.blob(baseline.sha, files.config_rel)
    if config_bytes is None:
        raise ReplayError(f"the baseline commit of {rev} has no {files.config_rel}",
                          hint="the branch was not made by `arx run`")
    config = RunConfig.from_json(config_bytes.decode())
    _check_finished(name, rev, commits)
    transcripts = _transcripts(repo, rev, commits, files.llm_rel)
    settings = repo.blob(baseline.sha, files.llm_settings_rel)
    proposers = {e.get("proposer") for e in events if e.get("event") == Event.TRIAL
                 and e.get("kind", "trial") == TrialKind.TRIAL and e.get("proposer")}
    proposer = "llm" if settings is not None or "llm" in proposers else "optuna"
    unknown = proposers - {proposer}
    if unknown:
        raise ReplayError(
            f"run {name!r} used the proposer {sorted(unknown)[0]!r}; replay re-runs the offline "
            "proposer (optuna) or serves recorded LLM answers (llm) only",
            hint="runs made with `arx run` use one of the two")
    trials = {}
    for e in events:
        if e.get("event") == Event.TRIAL and e.get("status") not in _NOT_RUN:
            trials[(int(e["iteration"]), e.get("kind", "trial"), int(e.get("seq", 0) or 0),
                    int(e.get("attempt", 0) or 0))] = e
    return Recording(name=name, branch=rev, tip=tip, baseline=baseline.sha, base=base,
                     commits=commits, trace_bytes=trace_bytes, events=events,
                     config_bytes=config_bytes, config=config, settings_bytes=settings,
                     transcripts=transcripts, proposer=proposer, trials=trials,
                     provenance=read_provenance(
                         (repo.blob(tip, files.provenance_rel) or b"").decode(errors="replace")))


def _check_finished(name: str, rev: str, commits: list[CommitRecord]) -> None:
    """A replay reproduces a run to its end: after its last ``end of run`` commit the branch
    may hold mechanisms added by hand and `arx verify` commits (and anyone's edits, which the
    comparison shows), but no commit of a session that did not end."""
    ends = [k for k, c in enumerate(commits) if c.trailers.get(Trailer.RUN) == name
            and level_of(c) is Level.END]
    after = [c for c in commits[ends[-1] + 1:] if c.trailers.get(Trailer.RUN) == name] \
        if ends else []
    by_hand = all(level_of(c) is Level.VERIFY or (
        level_of(c) is Level.L2 and (c.trailers.get(Trailer.SOURCE) == Source.MANUAL
                                     or is_revert(c))) for c in after)
    if not ends or not by_hand:
        raise ReplayError(f"run {name!r} on {rev} is not finished (no `end of run` commit "
                          "after its last iteration)",
                          hint=f"finish it with `arx run --resume {name}`, then replay it")


def _transcripts(repo: ReplayGit, rev: str, commits: list[CommitRecord],
                 under: str) -> list[tuple[str, bytes, dict[str, Any]]]:
    """Every transcript any commit of the run carried, in request order, newest content.

    Not only the tip's: a Level-2 commit that is reverted takes the transcripts it carried
    with it (a replay does the same), and a later request may reuse their numbers. A request
    was made before every transcript first committed later, so the order is (the first commit
    carrying it, its number)."""
    first: dict[str, tuple[int, int]] = {}
    latest: dict[str, str] = {}
    for k, commit in enumerate(commits):
        for path, oid in repo.entries(commit.sha, under).items():
            first.setdefault(path, (k, _number(path)))
            latest[path] = oid
    out = []
    for path in sorted(first, key=lambda p: (first[p], p)):
        raw = repo.object_bytes(latest[path])
        try:
            data = load_line(raw)
        except ValueError as exc:
            raise TraceError(f"{rev}:{path} is not a JSON object ({exc}): the transcript is "
                             "corrupt",
                             hint="restore it from an earlier commit of the branch") from None
        out.append((path, raw, data))
    return out


def _number(path: str) -> int:
    m = re.match(r"(\d+)-", path.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else 1 << 30
