"""The local files a script keeps its settings in, which join the target (``[target] files``).

Two kinds, both files of the user's repository that git tracks (never site-packages, never a
file git does not know: a run's worktree holds only tracked files):

- a config file the script reads through a loader call with a literal path
  (``yaml.safe_load(open("conf/config.yaml"))``, ``sources.loaded_files``): always, as the
  script says that its settings are there;
- a local module it imports (``import config``, ``from cfg import LR``, ``from conf import
  settings``): when the module's name says it holds settings (config, cfg, conf, settings,
  params, hparams, hyperparams, options) or the script has no setting of its own. Other local
  modules (``model.py``) are left alone: their values are usually set by the script at run
  time, and tuning them would only waste trials.

A path is relative to the repository root (where the command runs) or else to the script's
folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import libcst as cst

from arx.core.codemods.common import dotted
from arx.core.codemods.configfiles import config_format
from arx.core.codemods.sources import imported_modules, loaded_files
from arx.core.repo.git import GitRepo

__all__ = ["CONFIG_WORDS", "LocalFile", "local_files"]

#: a module whose name holds one of these words holds settings
CONFIG_WORDS = frozenset({"config", "configs", "cfg", "conf", "settings", "params", "hparams",
                          "hyperparams", "hyperparameters", "options"})


@dataclass(frozen=True)
class LocalFile:
    """A file the script reads settings from: its repo-relative path, and how it was found."""

    path: str
    #: e.g. "imported at line 3 (import config)" or "read at line 12 (yaml.safe_load)"
    found: str
    #: whether git tracks it (an untracked one cannot join: a trial would not see it)
    tracked: bool
    module: bool


def _rel(root: Path, base: Path, text: str) -> str | None:
    """``text`` as a repo-relative path of an existing file, from the root or the script's
    folder; None outside the repository."""
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts:
        return None
    for where in (root, base):
        cand = where / text
        if cand.is_file():
            try:
                return cand.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                return None
    return None


def _module_files(root: Path, base: Path, name: str) -> list[str]:
    """Files of the repository that the import of ``name`` may load: ``cfg.py``, the package's
    ``__init__.py`` and, for ``from conf import settings``, ``conf/settings.py``."""
    parts = name.replace(".", "/")
    out = []
    for text in (f"{parts}.py", f"{parts}/__init__.py"):
        rel = _rel(root, base, text)
        if rel:
            out.append(rel)
    return out


def _says_config(path: str) -> bool:
    words = {w.lower() for part in PurePosixPath(path).with_suffix("").parts
             for w in part.replace("-", "_").split("_")}
    return bool(words & CONFIG_WORDS)


def local_files(root: Path, repo: GitRepo | None, script: str, source: str,
                has_own: bool) -> list[LocalFile]:
    """The files of the repository that ``script`` (``source``) reads settings from, in the
    order found (see the module docstring); ``has_own``: the script has settings itself."""
    root = Path(root)
    base = (root / script).parent
    tracked = set(repo.tracked_files()) if repo is not None and repo.head_sha() else set()
    out: dict[str, LocalFile] = {}
    for text, line in loaded_files(source):
        rel = _rel(root, base, text)
        if rel and config_format(rel) and rel != script:
            out.setdefault(rel, LocalFile(rel, f"read at line {line}", rel in tracked, False))
    members = _from_imports(source)
    for name, line in imported_modules(source):
        subs = [rel for m in members.get(name, ()) for rel in _module_files(root, base, m)]
        for rel in _module_files(root, base, name) + subs:
            if rel == script or rel in out or (has_own and not _says_config(rel)):
                continue
            out[rel] = LocalFile(rel, f"imported as {name} at line {line}", rel in tracked, True)
    return list(out.values())


def _from_imports(source: str) -> dict[str, list[str]]:
    """Top-level ``from conf import settings``: package -> the dotted modules it may name
    (``conf.settings``), whose files (conf/settings.py) are then looked for. Parsed once."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return {}
    out: dict[str, list[str]] = {}
    for stmt in module.body:
        for small in getattr(stmt, "body", ()) if isinstance(stmt, cst.SimpleStatementLine) else ():
            if isinstance(small, cst.ImportFrom) and small.module is not None \
                    and not small.relative and not isinstance(small.names, cst.ImportStar):
                package = dotted(small.module)
                out.setdefault(package, []).extend(
                    f"{package}.{dotted(alias.name)}" for alias in small.names)
    return out
