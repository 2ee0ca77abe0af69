"""The text arx and git exchange: commit messages written, log records read, errors explained.

A commit message is a subject, an optional body and a trailer block (``Key: value`` lines, the
message's last paragraph). ``format_message`` writes one, each part cut to a stated size
(``MAX_SUBJECT``, ``MAX_BODY``, ``MAX_TRAILER``: a hypothesis or a gate's output can be as long
as an LLM or a mechanism made it) and without control characters; ``LOG_FORMAT`` asks ``git log -z`` for
its fields and ``parse_log`` reads them back as ``CommitRecord`` objects, trailers parsed by git.
``hint_for`` turns git's error output into the hint of a ``RepoError``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from arx.core.repo.commits import Trailer

__all__ = ["LOG_FORMAT", "RUN_TRAILER", "CommitRecord", "format_message", "hint_for", "parse_log"]

#: the trailer that marks a commit as made by arx; ``GitRepo.revert`` acts only on commits with it
RUN_TRAILER = Trailer.RUN
#: the ``git log --format`` of ``parse_log``: sha, author date, subject, body, trailers (NUL-split)
LOG_FORMAT = "%H%x00%aI%x00%s%x00%b%x00%(trailers:only,unfold)"

#: the most characters of a subject, a body and a trailer value arx writes in a commit message
MAX_SUBJECT = 200
MAX_BODY = 16_000
MAX_TRAILER = 1_000

_TRAILER_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LOG_FIELDS = 5


@dataclass(frozen=True)
class CommitRecord:
    """One commit as ``GitRepo.log`` reads it. ``body`` excludes the trailer block; read-only."""

    sha: str
    subject: str
    body: str
    trailers: Mapping[str, str] = field(default_factory=dict)
    authored_at: str = ""  # ISO 8601 with offset

    @property
    def made_by_arx(self) -> bool:
        return RUN_TRAILER in self.trailers


def parse_log(out: str) -> list[CommitRecord]:
    """The records in the output of ``git log -z --format=LOG_FORMAT``, in its order."""
    fields = out.split("\0")
    records = []
    for i in range(0, len(fields) - _LOG_FIELDS + 1, _LOG_FIELDS):
        sha, when, subject, body, trailer_text = fields[i : i + _LOG_FIELDS]
        trailers = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                trailers[key.strip()] = value.strip()
        body = body.rstrip()
        if trailers:  # git's trailer block is the body's last paragraph
            cut = body.rfind("\n\n")
            body = body[:cut].rstrip() if cut >= 0 else ""
        records.append(CommitRecord(sha, subject, body, trailers, when))
    return records


def format_message(subject: str, body: str, trailers: Mapping[str, str] | None) -> str:
    """Subject (whitespace folded), body and ``Key: value`` trailer block, blank-line separated,
    each cut to its size (``MAX_SUBJECT``, ``MAX_BODY``, ``MAX_TRAILER``; a cut says so)."""
    subject = _cut(" ".join(_CONTROL.sub(" ", subject).split()), MAX_SUBJECT)
    if not subject:
        raise ValueError("a commit needs a non-empty subject")
    parts = [subject]
    body = _CONTROL.sub("", body.replace("\t", "    ")).strip("\n").rstrip()
    if body.strip():
        parts.append(_cut(body, MAX_BODY))
    if trailers:
        lines = []
        for key, value in trailers.items():
            if not _TRAILER_KEY.match(key):
                raise ValueError(f"invalid trailer key {key!r}: use letters, digits and '-'")
            lines.append(f"{key}: {_cut(' '.join(_CONTROL.sub(' ', str(value)).split()), MAX_TRAILER)}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _cut(text: str, size: int) -> str:
    """``text``, or its first characters and how many were cut, in ``size`` characters."""
    if len(text) <= size:
        return text
    note = f" [... {len(text) - size + 40} characters cut]"
    return text[: size - len(note)].rstrip() + note


def hint_for(stderr: str) -> str:
    """What to do about a failed git command, from its error output."""
    text = stderr.lower()
    if "index.lock" in text or ".lock': file exists" in text:
        return "another git process is running here; if none is, delete the .lock file it names"
    if "already checked out" in text or "already used by worktree" in text:
        return "the branch is checked out elsewhere; `git worktree list` shows where"
    if "already exists" in text:
        return "choose another run name, or remove the existing branch or directory"
    if "unknown revision" in text or "not a valid object name" in text or "bad revision" in text:
        return "check the commit or branch name with `git log --oneline`"
    if "would be overwritten" in text or "local changes" in text:
        return "commit or stash the local changes first"
    return "run the same git command by hand to see the full error"


def parse_worktrees(porcelain: str) -> dict[Path, str | None]:
    """`git worktree list --porcelain`: each worktree's path -> its branch, None if detached."""
    found: dict[Path, str | None] = {}
    current: Path | None = None
    for line in porcelain.splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree ") :]).resolve()
            found[current] = None
        elif line.startswith("branch refs/heads/") and current is not None:
            found[current] = line[len("branch refs/heads/") :]
    return found


@contextlib.contextmanager
def message_file(message: str) -> Iterator[str]:
    """``message`` in a temporary file for ``git commit -F`` (on argv a long one fails: E2BIG)."""
    fd, path = tempfile.mkstemp(prefix="arx-message-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(message)
        yield path
    finally:
        os.unlink(path)
