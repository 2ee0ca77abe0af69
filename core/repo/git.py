"""The one owner of git: every read and write of a managed repository goes through ``GitRepo``.

Modelled on aider's ``repo.py``: commits carry an attributed author and a trailer block
(``Arx-Run: <run>`` marks a commit as made by arx), ``commit`` returns the new sha or ``None``,
git failures become ``RepoError`` with a hint, and ``revert`` refuses to undo a commit that arx
did not make. Messages go to git in a file, never on argv; their format lives in ``gittext``,
the locks (arx's ``RunLock``, git's ``index.lock``) in ``lock``.

Paths given to ``GitRepo`` methods are relative to ``root`` (absolute paths inside it work too).
Every git call runs with ``GIT_LITERAL_PATHSPECS=1``, so a path is a path, never a glob.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import git

from arx.core.errors import RepoError
from arx.core.repo.commits import Trailer
from arx.core.repo.gittext import (
    LOG_FORMAT,
    RUN_TRAILER,
    CommitRecord,
    format_message,
    hint_for,
    message_file,
    parse_log,
    parse_worktrees,
)
from arx.core.repo.lock import clear_stale_index_lock

#: identity used for arx's commits when the repository has no user.name / user.email
ARX_AUTHOR = ("arx", "arx@localhost")


class GitRepo:
    """A git work tree (the main checkout or an arx worktree) and the only way arx touches git."""

    #: how long a write waits for a live git process (e.g. the user's `git status`) to drop
    #: ``index.lock`` before giving up
    lock_wait_s: float = 5.0

    def __init__(self, path: str | os.PathLike[str]):
        where = Path(path).expanduser().resolve()
        try:
            repo = git.Repo(where, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise RepoError(
                f"{where} is not inside a git work tree",
                hint="run `git init` there, or drop --no-git-init so arx creates the repository",
            ) from None
        if repo.bare or repo.working_tree_dir is None:
            raise RepoError(f"{where} is a bare repository", hint="use a checkout with a work tree")
        self._repo = repo
        self.root = Path(repo.working_tree_dir).resolve()
        self._index_lock: Path | None = None

    def __repr__(self) -> str:
        return f"GitRepo({str(self.root)!r})"

    @classmethod
    def init(cls, path: str | os.PathLike[str]) -> GitRepo:
        """``git init`` at ``path`` (created if needed) with initial branch ``main``."""
        where = Path(path).expanduser()
        where.mkdir(parents=True, exist_ok=True)
        fresh = not (where / ".git").exists()
        runner = git.Git(str(where))
        status, _, err = runner.execute(
            ["git", "init", "-q"], with_extended_output=True, with_exceptions=False
        )
        if status != 0:
            raise RepoError(f"`git init` failed in {where}: {err.strip()}", hint="check the path")
        if fresh:  # `git init -b` needs git >= 2.28; this works everywhere
            runner.execute(["git", "symbolic-ref", "HEAD", "refs/heads/main"])
        return cls(where)

    # ------------------------------------------------------------------ reading

    def head_sha(self) -> str | None:
        """The sha HEAD points at, or ``None`` on an unborn branch."""
        status, out, _ = self._git("rev-parse", "--verify", "-q", "HEAD", ok=(0, 1))
        return out.strip() if status == 0 else None

    def current_branch(self) -> str | None:
        """The checked-out branch name (also on an unborn branch), ``None`` when detached."""
        status, out, _ = self._git("symbolic-ref", "-q", "--short", "HEAD", ok=(0, 1))
        return out.strip() if status == 0 else None

    def branch_exists(self, name: str) -> bool:
        status, _, _ = self._git("rev-parse", "--verify", "-q", f"refs/heads/{name}", ok=(0, 1))
        return status == 0

    def branches(self, pattern: str = "*") -> list[str]:
        """Local branch names matching the glob ``pattern`` (``*`` crosses ``/``), sorted."""
        _, out, _ = self._git("for-each-ref", "--format=%(refname)", "refs/heads/")
        names = (line[len("refs/heads/") :] for line in out.splitlines() if line)
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether commit ``a`` is ``b`` or an ancestor of it."""
        status, _, _ = self._git("merge-base", "--is-ancestor", a, b, ok=(0, 1))
        return status == 0

    def tracked_files(self) -> list[str]:
        """Paths git tracks in this work tree (relative, posix)."""
        return [p for p in self._git("ls-files", "-z", strip=False)[1].split("\0") if p]

    def untracked(self, paths: Iterable[str]) -> list[str]:
        """Files and folders under ``paths`` that git does not track, ignored ones included; a
        folder holding nothing tracked is one entry ending in ``/``."""
        rels = [self._rel(p) for p in paths]
        if not rels:
            return []
        out = self._git("ls-files", "-z", "--others", "--directory", "--", *rels, strip=False)[1]
        return sorted({p for p in out.split("\0") if p})

    def is_ignored(self, path: str | os.PathLike[str]) -> bool:
        """Whether git ignores ``path`` (``git check-ignore``)."""
        literal_off = {"GIT_LITERAL_PATHSPECS": "0"}  # check-ignore refuses literal pathspecs
        return self._git("check-ignore", "-q", "--", self._rel(path), ok=(0, 1),
                         env=literal_off)[0] == 0

    def delete_branch(self, name: str) -> None:
        """Delete branch ``name`` (merged or not); refuses the branch checked out here."""
        if self.current_branch() == name:
            raise RepoError(f"{name} is checked out in {self.root}",
                            hint="check out another branch first")
        self._git("branch", "-D", "--", name)

    def dirty_paths(self, paths: Iterable[str] | None = None, untracked: bool = True) -> list[str]:
        """Modified, staged, deleted or (``untracked``) untracked files among ``paths`` (all)."""
        args = ["status", "--porcelain=v1", "-z",
                "--untracked-files=all" if untracked else "--untracked-files=no"]
        if paths is not None:
            rels = [self._rel(p) for p in paths]
            if not rels:
                return []
            args += ["--", *rels]
        _, out, _ = self._git(*args, strip=False)
        entries = out.split("\0")
        dirty: set[str] = set()
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if len(entry) < 4:
                continue
            dirty.add(entry[3:])
            if entry[0] in "RC":  # a rename is followed by its source path
                dirty.add(entries[i])
                i += 1
        return sorted(dirty)

    def log(
        self, rev: str = "HEAD", max_count: int | None = None, paths: Iterable[str] | None = None
    ) -> list[CommitRecord]:
        """Commits reachable from ``rev``, newest first, with their trailers parsed by git."""
        if rev == "HEAD" and self.head_sha() is None:
            return []
        args = ["log", "-z", f"--format={LOG_FORMAT}"]
        if max_count is not None:
            args.append(f"--max-count={max_count}")
        args += [rev, "--", *(self._rel(p) for p in paths or ())]
        _, out, _ = self._git(*args, strip=False)
        return parse_log(out)

    def show(self, rev: str, path: str) -> str | None:
        """The content of ``path`` at ``rev``, or ``None`` if it has no such file."""
        status, out, _ = self._git(
            "cat-file", "blob", f"{rev}:{self._rel(path)}", ok=None, text=False, strip=False
        )
        if status == 0:
            return out.decode("utf-8", errors="replace")
        self._resolve(rev)  # raises RepoError when the revision itself is unknown
        return None

    # ------------------------------------------------------------------ writing

    def commit(
        self,
        paths: Sequence[str],
        subject: str,
        body: str = "",
        trailers: Mapping[str, str] | None = None,
        allow_empty: bool = False,
    ) -> str | None:
        """Stage exactly ``paths`` (added, modified or deleted) and commit only them.

        Anything else already staged stays staged and out of the commit. Returns the new sha, or
        ``None`` when none of ``paths`` changed and ``allow_empty`` is false. Hooks and signing
        are skipped: arx's commits are machine-made and must not stop on a user's pre-commit hook.
        """
        message = format_message(subject, body, trailers)
        rels = [self._rel(p) for p in paths]
        self._clear_stale_index_lock()
        indexed = self._index_paths(rels)
        # `git add` refuses a path that is neither on disk nor in the index (a deletion already
        # staged); `git commit --only` still needs it when HEAD has it
        to_add = [
            p
            for p in rels
            if os.path.lexists(self.root / p)
            or any(t == p or t.startswith(p.rstrip("/") + "/") for t in indexed)
        ]
        present = [p for p in rels if p in to_add or self._in_head(p)]
        if to_add:
            self._git("add", "-A", "--", *to_add)
        if not allow_empty and not self._staged(present):
            return None
        args = ["commit", "--only", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace", "-q"]
        if allow_empty:
            args.append("--allow-empty")
        with message_file(message) as path:
            args += ["-F", path]
            if present:
                args += ["--", *present]
            self._git(*args, env=self._identity_env())
        return self.head_sha()

    def abort_revert(self) -> bool:
        """Abandon a ``git revert`` a killed arx left half done; True if there was one."""
        self._clear_stale_index_lock()
        status, _, _ = self._git("revert", "--abort", ok=None)
        return status == 0

    def restore(self, paths: Iterable[str]) -> None:
        """Put tracked ``paths`` back to HEAD in the index and work tree.

        Used to clean a worktree after a killed trial. Files not in HEAD are unstaged but left on
        disk; untracked files are left alone.
        """
        rels = [self._rel(p) for p in paths]
        if not rels:
            return
        self._clear_stale_index_lock()
        in_head: list[str] = []
        if self.head_sha() is not None:
            _, out, _ = self._git("ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *rels)
            in_head = [p for p in out.split("\0") if p]
        if in_head:
            self._git("checkout", "HEAD", "--", *in_head)
        staged_new = [p for p in self._index_paths(rels) if p not in set(in_head)]
        if staged_new:
            self._git("rm", "--cached", "-q", "--", *staged_new)

    def revert(
        self, sha: str, subject: str, body: str = "", trailers: Mapping[str, str] | None = None
    ) -> str:
        """Undo an arx commit on the current branch with a new commit; returns its sha.

        ``git revert``; when later commits added lines right next to the commit's own (two
        Level-2 mechanisms inserted one after the other), exactly its own lines are taken out
        instead (``_unapply``). Refuses commits without an ``Arx-Run`` trailer and commits not
        reachable from HEAD. The
        new commit says ``This reverts commit <sha>.`` and carries ``Arx-Reverts: <sha>`` and
        the reverted commit's ``Arx-Run`` unless ``trailers`` give them.
        """
        full = self._resolve(sha)
        record = self.log(full, max_count=1)[0]
        if not record.made_by_arx:
            raise RepoError(
                f"refusing to revert {full[:12]} ({record.subject!r}): arx did not make it "
                f"(no {RUN_TRAILER} trailer)",
                hint="arx only undoes its own commits; run `git revert` yourself if you mean it",
            )
        head = self.head_sha()
        if head is None or not self.is_ancestor(full, head):
            raise RepoError(f"cannot revert {full[:12]}: it is not on the checked-out branch",
                            hint=f"check out the run branch first (now on "
                                 f"{self.current_branch()!r})")
        self._clear_stale_index_lock()
        if self._git("diff", "--cached", "--quiet", ok=(0, 1))[0] != 0:
            raise RepoError(f"cannot revert {full[:12]}: the index of {self.root} has staged "
                            "changes", hint="commit or unstage them (`git restore --staged .`)")
        status, _, err = self._git("revert", "--no-commit", full, ok=None)
        left: list[str] | None = []
        if status != 0:
            self._git("revert", "--abort", ok=None)
            left = self._unapply(full)
        if left is None:
            raise RepoError(
                f"cannot revert {full[:12]} cleanly: {err.strip()}",
                hint="later commits changed the same lines; resolve by hand with `git revert`",
            )
        if self._git("diff", "--cached", "--quiet", ok=(0, 1))[0] == 0:
            self._git("revert", "--quit", ok=None)
            raise RepoError(f"reverting {full[:12]} changes nothing (already reverted?)")
        kept = f"Its own lines taken out; left as later commits made them: {', '.join(left)}." \
            if left else ""
        body = "\n\n".join(part for part in (body.strip(), f"This reverts commit {full}.", kept)
                           if part)
        extra = {RUN_TRAILER: record.trailers[RUN_TRAILER], Trailer.REVERTS: full}
        message = format_message(subject, body, {**extra, **(trailers or {})})
        with message_file(message) as path:
            self._git("commit", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace", "-q",
                      "-F", path, env=self._identity_env())
        return self.head_sha() or ""

    def file_without(self, sha: str, rel: str) -> str | None:
        """``rel`` as at HEAD with ``sha``'s own lines taken out (what ``revert`` would leave),
        made in a scratch index: nothing of the checkout changes. None when they cannot be."""
        with tempfile.TemporaryDirectory(prefix="arx-without-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("read-tree", "HEAD", env=env)
            if self._unapply(self._resolve(sha), env, [rel]) != []:
                return None
            return self._git("show", f":{rel}", env=env, strip=False)[1]

    def _unapply(self, sha: str, env: Mapping[str, str] | None = None,
                 only: Sequence[str] | None = None) -> list[str] | None:
        """Stage the reverse of ``sha``'s changes without context lines (``git apply -R
        --unidiff-zero``), file by file, so neighbours a later commit added do not block it;
        with ``env`` (a scratch ``GIT_INDEX_FILE``) in that index only, with ``only`` to those
        files. Returns the files left as later commits made them (None: nothing undone)."""
        status, diff, _ = self._git("diff", "-U0", "--no-color", "--no-ext-diff", f"{sha}^", sha,
                                    "--", *(only or ()), ok=None, strip=False)
        paths = self._git("diff", "--name-only", f"{sha}^", sha, "--", *(only or ()),
                          ok=None)[1].splitlines()
        if status != 0 or not diff.strip():
            return None if only is None else []
        left = []
        with tempfile.TemporaryDirectory(prefix="arx-unapply-") as tmp:
            patch = Path(tmp) / "commit.diff"
            patch.write_text(diff)
            for path in paths:
                applied, _, _ = self._git("apply", "-R", "--unidiff-zero",
                                          "--cached" if env else "--index", f"--include={path}",
                                          str(patch), ok=None, env=env)
                if applied != 0:
                    left.append(path)
        return None if len(left) == len(paths) else left

    # ------------------------------------------------------------------ worktrees

    def add_worktree(
        self, path: str | os.PathLike[str], branch: str, start_point: str = "HEAD"
    ) -> GitRepo:
        """Check out ``branch`` at ``path``, creating the branch at ``start_point`` if needed.

        Reopens an existing worktree of that branch; re-adds one whose directory was deleted.
        A worktree inside this checkout is added to ``info/exclude`` unless already ignored, so
        the user's ``git status`` never shows it.
        """
        where = self._abs(path)
        registered = self._worktrees()
        if self.branch_exists(branch):
            if where in registered and where.exists():
                if registered[where] != branch:
                    raise RepoError(
                        f"{where} is a worktree for {registered[where] or 'a detached HEAD'}, "
                        f"not {branch}",
                        hint="choose another run name, or `git worktree remove` it",
                    )
                return GitRepo(where)
            if where.exists():
                raise RepoError(
                    f"{where} exists but is not a worktree of {self.root}",
                    hint="move it away, or choose another run name",
                )
            self._git("worktree", "prune")
            self._git("worktree", "add", "-q", str(where), branch)
        else:
            if start_point == "HEAD" and self.head_sha() is None:
                raise RepoError(
                    f"cannot branch {branch} from {self.root}: it has no commit yet",
                    hint="commit the baseline first (`arx init` does)",
                )
            self._git("worktree", "add", "-q", "-b", branch, str(where), start_point)
        self._exclude(where)
        return GitRepo(where)

    def remove_worktree(self, path: str | os.PathLike[str]) -> None:
        """Delete the worktree at ``path`` (uncommitted files in it too); the branch stays."""
        where = self._abs(path)
        if where in self._worktrees():
            self._git("worktree", "remove", "--force", str(where))
        elif where.exists():
            raise RepoError(f"{where} is not a worktree of {self.root}", hint="delete it yourself")
        self._git("worktree", "prune")

    # ------------------------------------------------------------------ internals

    def _git(
        self,
        *args: str,
        ok: tuple[int, ...] | None = (0,),
        env: Mapping[str, str] | None = None,
        text: bool = True,
        strip: bool = True,
    ) -> tuple[int, str, str]:
        """Run one git command in ``root``; a status outside ``ok`` raises RepoError.

        ``ok=None`` accepts any status. With ``text=False`` stdout is bytes.
        """
        full_env = {"GIT_LITERAL_PATHSPECS": "1", "GIT_TERMINAL_PROMPT": "0", **(env or {})}
        try:
            status, out, err = self._repo.git.execute(
                ["git", *args],
                with_extended_output=True,
                with_exceptions=False,
                env=full_env,
                stdout_as_string=text,
                strip_newline_in_stdout=strip,
            )
        except git.GitCommandNotFound:
            raise RepoError("git is not installed or not on PATH", hint="install git") from None
        if ok is not None and status not in ok:
            raise RepoError(
                f"`git {args[0]}` failed in {self.root}: {(err or '').strip() or 'no message'}",
                hint=hint_for(err or ""),
            )
        return status, out, err

    def _rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` as a posix path relative to root (no symlink resolution of the file)."""
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        absolute = p.parent.resolve() / p.name
        try:
            return absolute.relative_to(self.root).as_posix()
        except ValueError:
            raise RepoError(f"{path} is outside the repository {self.root}") from None

    def _abs(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.root / p).resolve()

    def _resolve(self, rev: str) -> str:
        status, out, _ = self._git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}", ok=(0, 1))
        if status != 0:
            raise RepoError(f"unknown revision {rev!r} in {self.root}", hint="see `git log`")
        return out.strip()

    def _in_head(self, rel: str) -> bool:
        if self.head_sha() is None:
            return False
        _, out, _ = self._git("ls-tree", "--name-only", "HEAD", "--", rel)
        return bool(out.strip())

    def _index_paths(self, rels: Sequence[str]) -> list[str]:
        if not rels:
            return []
        _, out, _ = self._git("ls-files", "-z", "--", *rels)
        return [p for p in out.split("\0") if p]

    def _staged(self, rels: Sequence[str]) -> bool:
        if not rels:
            return False
        return self._git("diff", "--cached", "--quiet", "--", *rels, ok=(0, 1))[0] == 1

    def _identity_env(self) -> dict[str, str]:
        """Author and committer: the repository's user.name/email (any config level), else arx."""
        _, out, _ = self._git("config", "--get-regexp", r"^user\.(name|email)$", ok=(0, 1))
        found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        name = found.get("user.name", "").strip() or ARX_AUTHOR[0]
        email = found.get("user.email", "").strip() or ARX_AUTHOR[1]
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def _worktrees(self) -> dict[Path, str | None]:
        """Registered worktrees (this checkout included): path -> branch name, None if detached."""
        return parse_worktrees(self._git("worktree", "list", "--porcelain")[1])

    def _exclude(self, where: Path) -> None:
        try:
            rel = where.relative_to(self.root).as_posix()
        except ValueError:
            return  # outside this checkout: nothing can show up in its status
        literal_off = {"GIT_LITERAL_PATHSPECS": "0"}  # check-ignore refuses literal pathspecs
        if self._git("check-ignore", "-q", "--", rel, ok=(0, 1), env=literal_off)[0] == 0:
            return
        _, common, _ = self._git("rev-parse", "--git-common-dir")
        exclude = (self.root / common.strip()).resolve() / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8") as fh:
            fh.write(f"/{rel}/\n")

    def _clear_stale_index_lock(self) -> None:
        """Delete this repository's ``index.lock`` if no live git holds it; wait for one that does
        (``lock_wait_s``), then RepoError. See ``lock.clear_stale_index_lock``."""
        if self._index_lock is None:
            _, out, _ = self._git("rev-parse", "--git-path", "index.lock")
            self._index_lock = (self.root / out.strip()).resolve()
        clear_stale_index_lock(self._index_lock, self.root, self.lock_wait_s)
