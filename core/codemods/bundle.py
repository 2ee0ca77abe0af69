"""A target of several files as one source: the script plus the local files its settings live
in (``[target] files``).

The loop passes a target's source around as one string (patched, measured, kept, replayed).
For a target of one file that string is the file, as it always was. For a script whose
settings also live in other files it is a *bundle*: every file of the target, the script
first, packed with their paths and lengths behind a marker no source file starts with.
``constants.py`` scans and patches a bundle file by file, each with its own surface (libcst
for ``.py``, ``configfiles`` for YAML/TOML/JSON), so every signature that takes a source keeps
its meaning.

Setting names: the script's settings keep their names (``LR``, ``--lr``, ``Args.lr``: old
branches read as before); a setting of another file is named ``<path>:<name>``, the file's
repo-relative path, a colon, and its name in that file (``config.py:LR``,
``conf/config.yaml:optim.lr``). No surface's own name holds a colon, so the split is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arx.core.errors import ConfigError, PatchError

__all__ = ["MARK", "SEP", "TargetFiles", "file_of", "is_bundle", "pack", "qualified", "read_files",
           "readable", "split_changes", "unpack", "write_files"]

#: the first line of a bundle (``\x1f``, the unit separator, starts no source file)
MARK = "\x1farx-files\n"
#: between a file's path and its name in that file
SEP = ":"


def is_bundle(source: str) -> bool:
    return source.startswith(MARK)


def pack(files: Mapping[str, str]) -> str:
    """``files`` (path -> text, the script first) as one bundle."""
    parts = [MARK]
    for path, text in files.items():
        parts.append(f"\x1f{path}\x1f{len(text)}\n{text}")
    return "".join(parts)


def unpack(source: str) -> dict[str, str]:
    """path -> text of a bundle, the script first; a plain source is not a bundle."""
    if not is_bundle(source):
        raise PatchError("the target source is one file, not a bundle of files")
    out: dict[str, str] = {}
    at = len(MARK)
    while at < len(source):
        head_end = source.index("\n", at)
        _, path, size = source[at:head_end].split("\x1f")
        start = head_end + 1
        out[path] = source[start:start + int(size)]
        at = start + int(size)
    return out


def qualified(path: str, name: str) -> str:
    """The name of setting ``name`` of the file ``path`` (not the script): ``config.py:LR``."""
    return f"{path}{SEP}{name}"


def file_of(name: str, paths: Sequence[str]) -> tuple[str, str]:
    """(path, name in that file) of a setting of a bundle whose files are ``paths``, the
    script first (an unqualified name is the script's)."""
    for path in paths[1:]:
        if name.startswith(path + SEP):
            return path, name[len(path) + 1:]
    return paths[0], name


def split_changes(changes: Mapping[str, object], paths: Sequence[str]
                  ) -> dict[str, dict[str, object]]:
    """``changes`` grouped by the file they edit, each named as in its file."""
    out: dict[str, dict[str, object]] = {}
    for name, value in changes.items():
        path, inner = file_of(name, paths)
        out.setdefault(path, {})[inner] = value
    return out


def readable(source: str) -> str:
    """A bundle as a person (or a model) reads it: each file under a ``# file: PATH`` line."""
    if not is_bundle(source):
        return source
    return "\n".join(f"# file: {path}\n{text}" for path, text in unpack(source).items())


def read_files(read: Callable[[str], str | None], paths: Sequence[str]) -> str | None:
    """The target's source from ``read(path)``: the file itself for one path, a bundle for
    several; None when a file is missing."""
    texts = {p: read(p) for p in paths}
    if any(t is None for t in texts.values()):
        return None
    return texts[paths[0]] if len(paths) == 1 else pack(texts)  # type: ignore[arg-type]


def write_files(root: Path, paths: Sequence[str], source: str) -> None:
    """Write a target's source (a file, or a bundle of ``paths``) under ``root``."""
    if len(paths) == 1 and not is_bundle(source):
        (Path(root) / paths[0]).write_text(source)
        return
    files = unpack(source)
    if list(files) != list(paths):
        raise PatchError(f"the target's files are {', '.join(paths)}, the source holds "
                         f"{', '.join(files)}")
    for path, text in files.items():
        target = Path(root) / path
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)


@dataclass(frozen=True)
class TargetFiles:
    """The files of a target in one directory (a run's worktree, a checkout): read as one
    source, written back from one."""

    root: Path
    paths: tuple[str, ...]

    def read(self) -> str:
        missing = [p for p in self.paths if not (Path(self.root) / p).is_file()]
        if missing:
            raise ConfigError(f"the target's file {missing[0]} is not in {self.root}",
                              hint="commit it, or take it out of [target] files in arx.toml")
        source = read_files(lambda p: (Path(self.root) / p).read_text(), self.paths)
        assert source is not None
        return source

    def write(self, source: str) -> None:
        write_files(self.root, self.paths, source)
