"""``arx init``: lay out (or adopt) a managed repository and commit it in one step.

Everything init writes is committed as one ``arx init`` commit, so runs branch from a clean HEAD
and the user's checkout is clean afterwards. Nothing is written until every check has passed.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tomlkit

from arx.core.app.adopt import Adoption, adopt
from arx.core.codemods.constants import discover_constants
from arx.core.config import CONFIG_FILE, TargetConfig, load_toml, plain
from arx.core.direction import contradiction, infer
from arx.core.errors import ConfigError, RepoError
from arx.core.loop.space import ParameterSpace
from arx.core.replay.workflow import REPLAY_WORKFLOW_PATH, replay_workflow_text
from arx.core.repo.commits import init_message
from arx.core.repo.git import GitRepo
from arx.core.repo.paths import LOCAL_DIR, RUNNER_PATH

GITIGNORE_LINE = f"{LOCAL_DIR}/"
DEFAULT_TARGET = TargetConfig(
    file="train.py",
    command="python train.py",
    metric="val_bpb",
    direction="min",
    setup="python prepare.py",
    budget_constant="TIME_BUDGET",
    steps_constant="TRAIN_STEPS",
    seed_constant="SEED",
)


@dataclass(frozen=True)
class InitResult:
    root: Path
    commit: str | None
    written: tuple[str, ...]
    n_constants: int
    n_tunable: int
    #: what init learned about an adopted script (None for the default target)
    adoption: Adoption | None = None
    #: the `arx run` to try next
    next_command: str = "arx run --iterations 8 --budget 12 --seed 2"
    #: how the metric's direction was decided (inferred from its name, or given against it)
    direction_note: str = ""


def package_text(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text()


def _target_table(target: TargetConfig) -> tomlkit.items.Table:
    table = tomlkit.table()
    table.add(tomlkit.comment("what to run and what to read"))
    for key, value in (
        ("file", target.file),
        ("command", target.command),
        ("setup", target.setup),
        ("metric", target.metric),
        ("direction", target.direction),
        ("metric_regex", target.metric_regex),
        ("include", list(target.include) or None),
        ("files", list(target.files) or None),
        ("budget_constant", target.budget_constant),
        ("steps_constant", target.steps_constant),
        ("seed_constant", target.seed_constant),
        ("timeout_margin", target.timeout_margin),
    ):
        if value is not None:
            table.add(key, value)
    return table


def build_toml(target: TargetConfig, space: ParameterSpace) -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("arx.toml: what arx tunes and how. Precedence per key:"))
    doc.add(tomlkit.comment("command-line flag > ARX_<KEY> environment variable > this file."))
    doc.add(tomlkit.nl())
    doc.add("target", _target_table(target))
    run = tomlkit.table()
    run.add(tomlkit.comment("defaults of `arx run`; uncomment to change"))
    run.add(tomlkit.comment("iterations = 30"))
    run.add(tomlkit.comment("budget = 30        # seconds of training per trial (time mode)"))
    run.add(tomlkit.comment("steps = 200        # or a fixed step count (deterministic)"))
    run.add(tomlkit.comment("group = \"A\"        # A: Level 1; B: + Level 1.5; C: + Level 2"))
    run.add(tomlkit.comment("confirm = 0        # extra seeds a would-be keep must also win on"))
    run.add(tomlkit.comment("rebaseline = 0     # re-measure the best every K iterations"))
    doc.add("run", run)
    llm = tomlkit.table()
    llm.add(tomlkit.comment("provider = \"deepseek\"   # or openai, ollama, vllm, llamacpp, a URL"))
    llm.add(tomlkit.comment("model = \"deepseek-chat\""))
    llm.add(tomlkit.comment("keys come from ARX_API_KEY or the provider's variable, never here"))
    doc.add("llm", llm)
    doc.add("params", space.to_toml())
    return doc


def _discover(source: str, target: TargetConfig, locked: Sequence[str], curated: str | None):
    constants = discover_constants(source)
    if not constants:
        raise ConfigError(
            f"{target.file} has no tunable top-level constants",
            hint="arx tunes top-level `NAME = literal` assignments; add some to the script",
        )
    table = plain(tomlkit.parse(curated)["params"]) if curated else {}
    names = {c.name for c in constants}
    unknown = sorted(set(locked) - names)
    if unknown:
        raise ConfigError(
            f"--lock names unknown constant(s): {', '.join(unknown)}",
            hint=f"constants in {target.file}: {', '.join(sorted(names))}",
        )
    table_locked = list(table.get("locked", []))
    managed = [n for n in target.managed_constants() if n in names]
    table["locked"] = sorted(set(table_locked) | set(locked) | set(managed))
    space = ParameterSpace.from_toml(table, constants)
    return constants, space


def init_repo(
    root: Path,
    *,
    target_file: str | None = None,
    command: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    setup: str | None = None,
    locked: Sequence[str] = (),
    only: Sequence[str] = (),
    metric_regex: str | None = None,
    include: Sequence[str] | None = None,
    git_init: bool = True,
    force: bool = False,
    replay_ci: bool = False,
) -> InitResult:
    """Create or adopt ``root`` as an arx-managed repository; one commit, or nothing at all.

    Adopting a script (``target_file``): ``only`` locks every other parameter, ``include``
    (None: proposed from the script) lists untracked paths every trial sees; ``direction`` None
    is inferred from the metric's name (``arx.core.direction``), and a name that says neither
    is refused."""
    root = Path(root).resolve()
    adopting = target_file is not None
    if adopting and not (command and metric):
        raise ConfigError("--target needs --command and --metric too")
    if not adopting and (command or metric or only or metric_regex or include):
        raise ConfigError("--command/--metric/--only/--metric-regex/--include only make sense "
                          "with --target FILE")
    direction, direction_note = _direction(metric, direction) if adopting \
        else (direction or "min", "")
    if direction not in ("min", "max"):
        raise ConfigError("--direction must be min or max")

    if (root / ".git").exists():
        repo = GitRepo(root)
    elif root.exists() and any(root.iterdir()) and _inside_repo(root):
        raise RepoError(
            f"{root} is a folder inside another git repository",
            hint="run `arx init` at the repository's top level, or in a new folder",
        )
    elif not git_init:
        raise RepoError(f"{root} is not a git repository", hint="run `git init` or drop --no-git-init")
    else:
        repo = None

    if (root / CONFIG_FILE).exists() and not force:
        raise ConfigError(f"{root / CONFIG_FILE} already exists", hint="pass --force to rewrite it")

    files: dict[str, str] = {}
    if adopting:
        target_path = root / target_file
        if not target_path.is_file():
            raise ConfigError(f"target file {target_path} does not exist", hint="check --target")
        target_source = target_path.read_text()
        target = TargetConfig(file=target_file, command=command, metric=metric,
                              direction=direction, setup=setup, metric_regex=metric_regex)
        curated = None
    else:
        target = DEFAULT_TARGET
        files["train.py"] = package_text("arx.train", "train.py")
        files["prepare.py"] = package_text("arx.train", "prepare.py")
        curated = package_text("arx.train", "space.toml")
        target_source = files["train.py"]
    files[RUNNER_PATH] = package_text("arx.runner_repo", "runner.py")
    gitignore = (root / ".gitignore").read_text() if (root / ".gitignore").exists() else ""
    if GITIGNORE_LINE not in gitignore.split():
        gitignore = (gitignore.rstrip("\n") + "\n" if gitignore.strip() else "") + GITIGNORE_LINE + "\n"
    files[".gitignore"] = gitignore
    if replay_ci:  # CI that replays every pushed run branch (arx replay)
        files[REPLAY_WORKFLOW_PATH] = replay_workflow_text()

    # an adopted script that git does not know yet joins the init commit (nothing to lose)
    unknown_to_git = repo is None or repo.head_sha() is None or repo.show("HEAD", target_file) is None
    new_target = [target_file] if adopting and unknown_to_git else []
    if repo is not None:
        dirty = [p for p in repo.dirty_paths(list(files) + [CONFIG_FILE] + (
            [target_file] if adopting else [])) if p not in new_target]
        if dirty:
            raise RepoError(
                f"uncommitted changes in file(s) arx init would write or read: {', '.join(dirty)}",
                hint="commit or stash them first",
            )

    # every check (discovery included) happens before the first byte is written
    adoption = None
    if adopting:
        adoption = adopt(root, repo, target_source, target, locked=locked, only=only,
                         include=include)
        target, constants, space = adoption.target, adoption.constants, adoption.space
        dirty = repo.dirty_paths(list(target.files)) if repo is not None and target.files else []
        if dirty:
            raise RepoError(f"uncommitted changes in file(s) whose settings arx init adopts: "
                            f"{', '.join(dirty)}", hint="commit or stash them first")
    else:
        constants, space = _discover(target_source, target, locked, curated)
    files[CONFIG_FILE] = tomlkit.dumps(build_toml(target, space))
    root.mkdir(parents=True, exist_ok=True)
    if repo is None:
        repo = GitRepo.init(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    load_toml(root)  # what we wrote must read back
    written = tuple(sorted([*files, *new_target]))
    commit = repo.commit(list(written), *init_message(
        f"target {target.file}: {len(constants)} parameters, metric {target.metric} "
        f"({target.direction})\ncommand: {shlex.quote(target.command)}"))
    return InitResult(
        root=root,
        commit=commit,
        written=written,
        n_constants=len(constants),
        n_tunable=len(space.tunable()),
        adoption=adoption,
        direction_note=direction_note,
        **({"next_command": adoption.next_command()} if adoption else {}),
    )


def _direction(metric: str | None, given: str | None) -> tuple[str, str]:
    """(direction, what to tell the user about it): the given one (warned about when the name
    says the other way), else the one the metric's name says; refused when it says neither."""
    if given is not None:
        return given, contradiction(metric or "", given) or ""
    said = infer(metric or "")
    if said is None:
        raise ConfigError(
            f"the metric name {metric!r} does not say whether lower or higher is better",
            hint="pass --direction min (lower is better: a loss, an error) or --direction max "
                 "(higher is better: an accuracy, a reward)")
    return said.direction, (f"direction {said.direction}, from the metric's name: {said.why()} "
                            "(--direction overrides it)")


def _inside_repo(path: Path) -> bool:
    probe = path if path.exists() else path.parent
    try:
        GitRepo(probe)
        return True
    except RepoError:
        return False
