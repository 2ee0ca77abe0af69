"""What ``arx init --target FILE`` learns about a user's script before it writes arx.toml.

``adopt`` scans the script (every config surface, see ``codemods.constants``), locks what the
lock rules name (``loop.lockrules``) or ``--only``/``--lock`` ask for, adopts budget, steps and
seed constants by name, proposes ``[target] include`` for untracked paths the script mentions,
and warns about flags and config files of the command that override tuned parameters. It
refuses a script with nothing to tune, naming what it found instead. It writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from arx.core.app.localfiles import local_files
from arx.core.codemods import bundle
from arx.core.codemods.configfiles import config_format
from arx.core.codemods.constants import DEFAULT, Constant, Scan, Skipped, scan_parameters
from arx.core.codemods.sources import imported_modules, inline_literals
from arx.core.config import TargetConfig
from arx.core.errors import ConfigError, PatchError, close_hint
from arx.core.loop.lockrules import lock_reason, name_words, training_length_words
from arx.core.loop.noeffect import command_overrides
from arx.core.loop.space import ParameterSpace
from arx.core.repo.git import GitRepo
from arx.core.repo.paths import LOCAL_DIR

__all__ = ["Adoption", "adopt", "managed_names"]

#: constant names adopted as budget / steps / seed constants when present (the default target's)
KNOWN_MANAGED = {"budget_constant": "TIME_BUDGET", "steps_constant": "TRAIN_STEPS",
                 "seed_constant": "SEED"}
#: folders a script writes (never linked into trials: they would write into the checkout)
_OUTPUT_WORDS = {"out", "output", "outputs", "ckpt", "ckpts", "checkpoint", "checkpoints", "log",
                 "logs", "runs", "wandb", "mlruns", "results", "lightning_logs", "tb"}


@dataclass(frozen=True)
class Adoption:
    """The outcome of ``adopt``: the target to write, its space, and what to tell the user."""

    target: TargetConfig
    space: ParameterSpace
    scan: Scan
    #: locked parameter -> why (a rule, a flag, or arx sets it)
    locked: dict[str, str] = field(default_factory=dict)
    #: flags or config files of the command that override tuned parameters
    warnings: list[str] = field(default_factory=list)
    #: what else to know: included paths, where else the script reads settings from
    notes: list[str] = field(default_factory=list)

    @property
    def constants(self) -> tuple[Constant, ...]:
        return self.scan.found

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        return self.scan.skipped

    def next_command(self) -> str:
        """The `arx run` that fits the script: a budget only if it has a budget constant."""
        if self.target.budget_constant:
            return "arx run --iterations 8 --budget 60"
        if self.target.steps_constant:
            return (f"arx run --iterations 8   # --steps N would set "
                    f"{self.target.steps_constant} to N")
        return "arx run --iterations 8"


def _unique(found: Sequence[Constant], test) -> str | None:
    hits = [c.name for c in found if test(c)]
    return hits[0] if len(hits) == 1 else None


def managed_names(found: Sequence[Constant]) -> dict[str, str | None]:
    """Budget, steps and seed constants: the default target's names, else the one parameter
    whose name says so (``max_iters``, ``--epochs``, ``Args.total_timesteps``; ``seed``,
    ``random_state``; ``time_budget``), else none."""
    names = {c.name for c in found}
    numeric = [c for c in found if c.kind in ("int", "float")]
    rules = {
        "budget_constant": lambda c: "budget" in name_words(c.name),
        "steps_constant": lambda c: c.kind == "int" and training_length_words(c.name)
        and "budget" not in name_words(c.name),
        "seed_constant": lambda c: c.kind == "int" and bool(
            {"seed", "random_state"} & set(name_words(c.name))),
    }
    return {key: KNOWN_MANAGED[key] if KNOWN_MANAGED[key] in names else _unique(numeric, rule)
            for key, rule in rules.items()}


def propose_include(repo: GitRepo | None, root: Path, strings: Sequence[str]) -> list[str]:
    """Paths the script mentions that exist in the checkout and hold files git does not track
    (data, tokenizers): ``data/`` for ``os.path.join('data', name)`` or ``'data/train.bin'``."""
    if repo is None:
        return []
    candidates: set[str] = set()
    for text in strings:
        path = PurePosixPath(text)
        if path.is_absolute() or ".." in path.parts or not path.parts or "://" in text:
            continue
        for cand in {path.parts[0], path.as_posix()}:
            if cand in (".", LOCAL_DIR, ".git") or cand.lower().strip("./") in _OUTPUT_WORDS:
                continue
            if (root / cand).exists():
                candidates.add(cand)
    out: list[str] = []
    for cand in sorted(candidates, key=lambda c: (len(PurePosixPath(c).parts), c)):
        if any(cand == o.rstrip("/") or cand.startswith(o) for o in out):
            continue  # already under a proposed folder
        if repo.untracked([cand]):
            out.append(cand + "/" if (root / cand).is_dir() else cand)
    return out


def _local_files(root: Path, target_file: str, scan: Scan, source: str,
                 noted: Sequence[str] = ()) -> list[str]:
    """What the script reads from the user's own repository: local modules it imports (with
    the ``--target`` that adopts one, or that it holds nothing to tune) and config files it
    names; files in ``noted`` were already explained (untracked, unreadable)."""
    base = (root / target_file).parent
    out = []
    for name, line in imported_modules(source):
        for cand in (base / (name.replace(".", "/") + ".py"),
                     base / name.replace(".", "/") / "__init__.py"):
            if cand.is_file():
                rel = cand.relative_to(root).as_posix()
                if rel in noted:
                    break  # init already said why it did not join
                try:
                    tunable = bool(scan_parameters(cand.read_text(), rel).found)
                except PatchError:
                    tunable = False
                out.append(f"the local module {name} (line {line}), whose settings "
                           f"`arx init --target {rel}` adopts" if tunable else
                           f"the local module {name} (line {line}), {rel}, which holds no "
                           f"setting arx can tune either")
                break
    for text in scan.strings:
        kind = config_format(text)
        if kind and ((base / text).is_file() or (root / text).is_file()):
            rel = text if (root / text).is_file() else \
                (base / text).relative_to(root).as_posix()
            out.append(f"the {kind.upper()} file {text}, whose settings "
                       f"`arx init --target {rel}` adopts")
    return out


def _unreadable(target_file: str) -> ConfigError | None:
    """A target that is neither a Python script nor a config file arx reads, refused by its
    suffix (never parsed as Python)."""
    suffix = PurePosixPath(target_file).suffix.lower()
    if suffix == ".py" or config_format(target_file):
        return None
    return ConfigError(f"{target_file} is not a Python script nor a YAML, TOML or JSON file "
                       f"({suffix or 'no suffix'}): arx cannot read its settings",
                       hint="name the script (.py) or config file (.yaml, .yml, .toml, .json) "
                            "that holds the settings with --target")


def _nothing_to_tune(target_file: str, scan: Scan, source: str = "",
                     local: Sequence[str] = ()) -> ConfigError:
    instead = [*local, *(f"it reads settings from {s}" for s in scan.sources)]
    instead += [f"{s.name} (line {s.line}): {s.reason}" for s in scan.skipped[:8]]
    instead += [f"the positional values {lit} (line {line})"
                for lit, line in inline_literals(source)[:8]]
    found = "; found instead: " + "; ".join(instead) if instead else ""
    return ConfigError(
        f"{target_file} has nothing arx can tune: no top-level `NAME = literal`, argparse "
        f"default or switch, config class field, module-level dict entry, literal keyword of "
        f"a call or default of a function it calls{found}",
        hint="arx rewrites literal values in the script, or in a local module or a YAML/TOML/"
        "JSON file it reads (adopt that file with --target FILE); settings computed at run "
        "time cannot be tuned: move the ones to tune into literals (e.g. a block of constants "
        "at the top)")


def _none_tunable(target_file: str, space: ParameterSpace, reasons: dict[str, str],
                  source: str) -> ConfigError:
    """Every parameter found is locked or has a single value: say which and why, and the
    positional literals of calls, which arx does not tune (a position is not a name)."""
    held = [f"{n} ({reasons[n]})" if n in reasons else f"{n} (a single value)"
            for n in space.specs]
    inline = [f"{lit} (line {line})" for lit, line in inline_literals(source)[:8]]
    seen = f"; positional values it does not tune: {', '.join(inline)}" if inline else ""
    return ConfigError(
        f"{target_file} has nothing arx may change: it found {', '.join(held)}{seen}",
        hint="unlock a parameter (--lock/--only, or [params] locked after init), give it "
             "choices, or move the values to tune into top-level `NAME = literal` constants")


def _rule(c: Constant) -> str | None:
    """The lock rule for a parameter: its name's, or for a function default its function's
    (``evaluate.n_batches``, ``save_plot.dpi``)."""
    reason = lock_reason(c.name)
    if reason is None and c.surface == DEFAULT:
        reason = lock_reason(c.name.rsplit(".", 1)[0])
    return reason


def _guarded(scan: Scan, space: ParameterSpace) -> dict[str, str]:
    """Options read only under a condition that a fixed option fails (``--nhead`` under ``if
    args.model == "Transformer"`` while ``--model`` is fixed at "LSTM"), with why."""
    fixed = {s.name: s.default for s in space.specs.values() if s.locked or not s.has_room}
    out = {}
    for name, reads in scan.guards.items():
        if name not in space.specs or space.specs[name].locked or not reads:
            continue
        failed = [next((c for c in conds if c.option in fixed and c.option != name
                        and not c.met_by(fixed[c.option])), None) for conds in reads]
        if all(failed):
            c = failed[0]
            assert c is not None
            out[name] = (f"only read when {c.describe()}, and {c.option} is fixed at "
                         f"{fixed[c.option]!r}")
    return out


def _join_local_files(root: Path, repo: GitRepo | None, script: str, source: str,
                      scan: Scan) -> tuple[dict[str, str], list[str], set[str], set[str]]:
    """The local files whose settings join the target (``localfiles.py``): path -> text, what
    init says about each (which file, how found, which settings; or why not), where the
    joined config files are read ("at line 12": no longer a source that overrides arx), and
    the files a note explains."""
    if config_format(script) is not None:
        return {}, [], set(), set()
    joined: dict[str, str] = {}
    notes: list[str] = []
    read_at: set[str] = set()
    explained: set[str] = set()
    for f in local_files(root, repo, script, source, has_own=bool(scan.found)):
        text = (root / f.path).read_text()
        try:
            names = [c.name for c in scan_parameters(text, f.path).found]
        except PatchError as exc:
            notes.append(f"{f.path} ({f.found}) was not adopted: {exc.message}")
            explained.add(f.path)
            continue
        if not names:
            continue
        if not f.tracked:
            notes.append(f"{f.path} ({f.found}) holds settings but git does not track it, so "
                         f"no trial would see a change to it: commit it and run `arx init "
                         f"--force` again to tune them")
            explained.add(f.path)
            continue
        joined[f.path] = text
        if not f.module:
            read_at.add(f.found.replace("read ", ""))
        shown = ", ".join(bundle.qualified(f.path, n) for n in names[:8])
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        notes.append(f"settings of {f.path} ({f.found}) join the target ([target] files): "
                     f"{shown}{more}")
    return joined, notes, read_at, explained


def adopt(root: Path, repo: GitRepo | None, source: str, target: TargetConfig, *,
          locked: Sequence[str] = (), only: Sequence[str] = (),
          include: Sequence[str] | None = None) -> Adoption:
    """Scan ``source`` (the script ``target.file``) and decide what arx.toml says about it.
    ``include`` None: proposed from the script; a list: exactly those paths."""
    refusal = _unreadable(target.file)
    if refusal is not None:
        raise refusal
    scan = scan_parameters(source, target.file)
    joined, joined_notes, read_at, explained = _join_local_files(root, repo, target.file,
                                                                 source, scan)
    if joined:
        texts = {target.file: source, **joined}
        scan = scan_parameters(bundle.pack(texts), target.file)
        target = replace(target, files=tuple(joined))
    if not scan.found:
        raise _nothing_to_tune(target.file, scan, source, [
            *joined_notes, *_local_files(root, target.file, scan, source, explained)])
    names = [c.name for c in scan.found]
    why = {s.name: f" ({s.name}, line {s.line}: {s.reason})" for s in scan.skipped}
    for flag, given in (("--lock", locked), ("--only", only)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise ConfigError(f"{flag} names {', '.join(unknown)}, not a parameter of "
                              f"{target.file}"
                              f"{why.get(unknown[0]) or close_hint(unknown[0], names)}",
                              hint=f"parameters: {', '.join(names)}")
    managed = {k: v for k, v in managed_names(scan.found).items()
               if getattr(target, k) is None}
    target = replace(target, **managed)
    if include is None:
        include = propose_include(repo, root, scan.strings)
    target = replace(target, include=tuple(include))
    reasons: dict[str, str] = {}
    for c in scan.found:
        if c.name in target.managed_constants():
            reasons[c.name] = "arx sets it (" + next(
                k.replace("_constant", "") for k in KNOWN_MANAGED
                if getattr(target, k) == c.name) + " constant)"
        elif only and c.name not in only:
            reasons[c.name] = "not named by --only"
        elif c.name in locked:
            reasons[c.name] = "--lock"
        elif not only and (rule := _rule(c)):
            reasons[c.name] = rule
    space = ParameterSpace.from_constants(scan.found, locked=reasons)
    guarded = _guarded(scan, space)
    if guarded:
        reasons.update(guarded)
        space = ParameterSpace.from_constants(scan.found, locked=reasons)
    if not space.tunable():
        raise _none_tunable(target.file, space, reasons, source)
    warnings = command_overrides(target.command, target.file,
                                 [s.name for s in space.tunable()], root)
    notes = [f"the script also reads settings from {s}: values set there override arx's"
             for s in scan.sources if not any(s.endswith(f" {at}") for at in read_at)]
    notes[:0] = joined_notes
    if target.include:
        notes.insert(0, f"linked into every trial (git does not track it): "
                        f"{', '.join(target.include)} ([target] include)")
    return Adoption(target, space, scan, reasons, warnings, notes)
