"""Stopping a replayed session where the recorded run was stopped.

A run that was killed and resumed, extended after it finished, or given a mechanism by hand
between two sessions records where each session ended: the ``at`` of its ``resume`` event (or
of a hand-added mechanism's ``level2`` note) says how many trace lines, commits and LLM
transcripts the run had at that moment (a ``Cut``). The loop is deterministic given the record,
so the replay reaches the same point by doing the same things in the same order; ``Cutter``
raises ``Stopped`` right before the first write that would go past the cut: a trace line
(``Trace``'s guard), a commit or revert (``StoppableGit``), a trial (``ServedTrials``: a trial at
the cut never got its record) or a transcript (``ReplayChatClient``). The replayed process
then "dies" there, and the next session resumes as the original did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arx.core.repo.git import GitRepo


class Stopped(BaseException):
    """The recorded run stopped here: the replayed session ends (not an error).

    A BaseException, like the signal that stops a real arx, so that no ``except Exception``
    on the way turns it into a trial result."""


@dataclass(frozen=True)
class Cut:
    """Where a recorded session ended: its trace lines, its commits after the run's base, and
    its LLM transcripts (None: not recorded, an older branch; then not a limit)."""

    trace_lines: int
    commits: int
    transcripts: int | None = None

    def describe(self) -> str:
        parts = [f"{self.trace_lines} trace lines", f"{self.commits} commits"]
        if self.transcripts is not None:
            parts.append(f"{self.transcripts} transcripts")
        return ", ".join(parts)


class Cutter:
    """Raises ``Stopped`` before a write past ``cut`` (None: no cut, the session runs on)."""

    def __init__(self, trace_path: Path, llm_dir: Path):
        self.trace_path = Path(trace_path)
        self.llm_dir = Path(llm_dir)
        self.cut: Cut | None = None
        self.commits = 0  # commits after the base on the replay branch

    def _lines(self) -> int:
        return len(self.trace_path.read_bytes().splitlines()) if self.trace_path.exists() else 0

    def line(self) -> None:
        """Before a trace line is written (and before a trial, whose record is the next line)."""
        if self.cut is not None and self._lines() >= self.cut.trace_lines:
            raise Stopped(f"the recorded session stopped after {self.cut.describe()}")

    trial = line

    def commit(self) -> None:
        if self.cut is not None and self.commits >= self.cut.commits:
            raise Stopped(f"the recorded session stopped after {self.cut.describe()}")

    def transcript(self) -> None:
        if self.cut is None or self.cut.transcripts is None:
            return
        have = len([n for n in os.listdir(self.llm_dir) if n.endswith(".json")]) \
            if self.llm_dir.is_dir() else 0
        if have >= self.cut.transcripts:
            raise Stopped(f"the recorded session stopped after {self.cut.describe()}")


class StoppableGit(GitRepo):
    """The replay's worktree: every commit and revert first asks the ``Cutter``."""

    def __init__(self, path: str | os.PathLike[str], cutter: Cutter):
        super().__init__(path)
        self.cutter = cutter

    def commit(self, paths: Sequence[str], subject: str, body: str = "",
               trailers: Mapping[str, str] | None = None, allow_empty: bool = False) -> str | None:
        self.cutter.commit()
        before = self.head_sha()
        sha = super().commit(paths, subject, body, trailers, allow_empty)
        if sha is not None and sha != before:
            self.cutter.commits += 1
        return sha

    def revert(self, sha: str, subject: str, body: str = "",
               trailers: Mapping[str, str] | None = None) -> str:
        self.cutter.commit()
        made = super().revert(sha, subject, body, trailers)
        self.cutter.commits += 1
        return made


def cut_of(at: Mapping[str, Any], base: str, positions: Mapping[str, int]) -> Cut | None:
    """A recorded ``at`` (``resume_point``) as a ``Cut`` on the original branch (``positions``:
    sha -> index among the run's commits); None when its head is not on the branch."""
    head = at.get("head")
    if head == base:
        commits = 0
    elif head in positions:
        commits = positions[head] + 1
    else:
        return None
    transcripts = at.get("transcripts")
    return Cut(int(at.get("trace_lines") or 0), commits,
               int(transcripts) if isinstance(transcripts, int) else None)
