"""arx.toml and the one resolved configuration of a run.

Precedence, key by key: command-line flag > ``ARX_<KEY>`` environment variable > ``[run]`` /
``[target]`` / ``[levels]`` tables of arx.toml > built-in default. The resolved ``RunConfig`` is
stored on the run branch (``runs/<name>/config.json``) so that a run can be resumed and replayed
with exactly the settings it started with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from arx.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILE = "arx.toml"
GROUPS = ("A", "B", "C", "D")
#: the revision of arx's run rules a new run starts with (``RunConfig.rules``)
CURRENT_RULES = 8
#: (rules >= 7) the shortest window whose stall lets Level 2 add a mechanism when the judge
#: window was derived from ``--iterations`` (``RunConfig.stall_window``)
STALL_WINDOW = 10


@dataclass(frozen=True)
class TargetConfig:
    """What to run and what to read: the ``[target]`` table."""

    file: str = "train.py"
    command: str = "python train.py"
    metric: str = "val_bpb"
    direction: str = "min"
    metric_regex: str | None = None
    #: the step a printed line names, group 1 (learning curves; ``execution.curve``)
    progress_regex: str | None = None
    #: run once per run before the baseline (idempotent data preparation)
    setup: str | None = None
    #: constants arx sets from --budget / --steps / confirmation seeds (locked from proposals)
    budget_constant: str | None = None
    steps_constant: str | None = None
    seed_constant: str | None = None
    #: seconds added to the time budget for start-up and evaluation before a trial is killed
    timeout_margin: float = 120.0
    #: paths of the checkout git does not track (data, tokenizers) that every trial sees: the
    #: untracked files under them are linked into the run's worktree and each parallel slot
    include: tuple[str, ...] = ()
    #: repo-relative files besides ``file`` whose settings the run tunes (a config module the
    #: script imports, a YAML/TOML/JSON file it reads); their settings are named
    #: ``PATH:NAME`` (``codemods.bundle``). Empty: the target is ``file`` alone.
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", tuple(self.include or ()))
        object.__setattr__(self, "files", tuple(self.files or ()))

    def paths(self) -> tuple[str, ...]:
        """Every file a run may edit: the script first, then ``files``."""
        return (self.file, *self.files)

    def managed_constants(self) -> tuple[str, ...]:
        names = (self.budget_constant, self.steps_constant, self.seed_constant)
        return tuple(n for n in names if n)


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one run, resolved. Stored on the branch as ``runs/<name>/config.json``."""

    name: str
    target: TargetConfig
    iterations: int = 30
    budget: float | None = None
    steps: int | None = None
    timeout: float | None = None
    group: str = "A"
    llm: str | None = None
    model: str | None = None
    seed: int = 0
    confirm: int = 0
    confirm_margin: float = 0.0
    rebaseline: int = 0
    #: time mode: seconds of the run after which the best is measured again (the machine may
    #: have changed since); 0 never. Runs stored before this setting existed read as 0.
    remeasure_after: float = 0.0
    k: int = 5
    m: int = 2
    #: LLM repair rounds after a failed gate; per-call limit of runner hooks; gate time limit
    repair: int = 1
    hook_timeout: float = 10.0
    gate_timeout: float = 60.0
    #: the most code (kB, UTF-8) one Level-2 mechanism may bring; larger ones are refused
    max_mechanism_kb: int = 64
    #: trials a Level-2 mechanism runs before the outcome gate judges it against the same
    #: number of trials before it (rules >= 3), and the window whose stall lets Level 2 add one
    #: (rules >= 4); 0 turns both off. Unset, a new run (rules >= 7) stores
    #: ``judge_window_for(iterations)``
    judge_window: int = 10
    #: rules >= 4: a Level-2 cycle adds a mechanism only when the ``judge_window`` iterations
    #: before it stalled (no gain, or waste); false: every m cycles, as in the paper
    step_aside: bool = True
    history: int = 12
    #: candidates trained at once per iteration, and where (local slots or a Ray cluster)
    parallel: int = 1
    executor: str = "local"
    address: str | None = None
    #: how the metric's spread is known: "auto" (measured at the start), "off", or a number (its
    #: standard deviation). Runs stored before this setting existed read as "off".
    noise: str = "off"
    #: held-out seeds the baseline and the best are trained on again when the run ends (rules
    #: >= 5; ``verify.py``); 0 turns it off. Runs stored before this setting existed read 0.
    verify: int = 0
    #: "on": a trial whose learning curve trails the best's is stopped early, as the runner's
    #: ``prune`` decides (``loop.pruning``); "off". Runs stored before this setting read "off".
    #: Its default is "off" where trials train as batches (``batched``: no curve is watched).
    prune: str = "off"
    #: where each value came from: "flag", "env", "arx.toml" or "default"
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: the revision of arx's run rules the run started with. 1 (runs made before it was
    #: stored): as they ran. 2: the budget, steps and seed constants are locked whatever
    #: [params] says, a trial equal to the best is ``no_effect`` (three in a row stop the run),
    #: and the offline proposer treats crashed configurations as infeasible. 3: the baseline
    #: is in the engine's records from the start (a fresh run and a resumed one ask the same
    #: questions), Level 1.5 freezes by evidence (``level15.rules``), the offline catalog is
    #: drawn in the order the trace calls for, the outcome gate judges every mechanism, and the
    #: offline proposer never repeats a measured configuration while an unmeasured one is
    #: within reach and fits TPE on a bounded window of the history (``proposers/offline.py``).
    #: 4: a Level-2 cycle adds a mechanism only when the ``judge_window`` iterations before it
    #: gained nothing or wasted trials (``outcome.calls_for_level2``); else Level 2 steps aside
    #: (``[levels] step_aside``, on by default).
    #: 5: margins use an upper confidence bound of the measured spread, floored at the
    #: metric's resolution (``noise.spread``); the noise event says whether the seed changes
    #: anything and how coarse the metric is; ``no_effect`` needs the trial's whole output to
    #: match the best's, and never stops a run whose metric is coarse; the run ends with a
    #: held-out verification (``--verify``).
    #: 6: a proposal refused by the space or the constraints under a mechanism's focus is
    #: waste like an emptied candidate list: 3 such iterations in a row are a fault that
    #: reverts the mechanism (``levels/policy.py``).
    #: 7: offline, Level 1.5 names only the parameters the evidence says are under-explored
    #: (``level15.under_explored``), and when no TPE draw of the offline proposer is new, its
    #: smallest unmeasured move tries those first (``proposers/offline.py``).
    #: Also 7: the outcome gate counts waste avoided as a benefit of its own: a mechanism whose
    #: window has fewer repeats (or less waste) per trial than the stall before it is kept,
    #: whatever the search's early gains were (``outcome.Judgement``); Level 1.5 takes a
    #: parameter proposed again and again without gain as evidence to freeze it
    #: (``level15.looping``); mechanisms compose: the runner's context lists each parameter's
    #: moves (``ctx["moves"]``), a focus never names a parameter whose every move a mechanism's
    #: ``allows`` refuses, and the catalog's TabuList refuses a configuration measured before;
    #: a cadence that fits the budget: ``judge_window`` left unset is ``judge_window_for(
    #: iterations)`` (the stall that calls for Level 2 is still judged over 10, ``stall_window``),
    #: a Level-2 cycle too late for its mechanism to be judged steps aside, and a window that
    #: ends with the run is judged at its end.
    #: 8: a measurement shorter than ``noise.MIN_JUDGED_S`` (0.5 s, two samples of its process
    #: tree) is neither judged for contention nor taken into the baseline's reference usage: a
    #: tree that ends between two samples has its CPU counted as others'.
    rules: int = 1

    def managed_values(self) -> dict[str, Any]:
        """The constants arx itself sets in the baseline: the budget (or the step count)."""
        values: dict[str, Any] = {}
        if self.budget is not None:
            values[self.target.budget_constant] = self.budget
            if self.target.steps_constant:
                values[self.target.steps_constant] = 0
        if self.steps is not None:
            values[self.target.steps_constant] = self.steps
        return values

    @property
    def stall_window(self) -> int:
        """The iterations whose stall lets a Level-2 cycle add a mechanism (rules >= 4): the
        judge window, except from rules 7 when that was derived from ``--iterations``
        (``judge_window_for``): then at least ``STALL_WINDOW``. A 5-iteration stall window let
        Level 2 narrow a search that was still gaining (bbob-f8, 3 seeds: group D -1.03 against
        A's -1.46); judging sooner does not need stepping in sooner."""
        if self.rules >= 7 and self.sources.get("judge_window") == "default":
            return max(self.judge_window, STALL_WINDOW)
        return self.judge_window

    def noise_sd(self) -> float | None:
        """The spread given as a number (``--noise 0.01``), else None ("auto" or "off")."""
        try:
            return float(self.noise)
        except ValueError:
            return None

    @property
    def time_mode(self) -> bool:
        """Trials train for a wall-clock budget (not a fixed step count): the machine's speed
        is part of the metric."""
        return self.steps is None

    def trial_timeout(self, baseline_wall_s: float | None = None) -> float:
        """Hard wall-clock limit of one trial: explicit, else budget + margin, else generous."""
        if self.timeout:
            return float(self.timeout)
        margin = self.target.timeout_margin
        if self.budget and not self.steps:
            return float(self.budget) + margin
        if baseline_wall_s:
            return 3.0 * baseline_wall_s + margin
        return 3600.0

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["sources"] = dict(self.sources)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
            target = TargetConfig(**data.pop("target"))
            return cls(target=target, **data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"stored run config is unreadable: {exc}") from None


#: run options: name -> (type, default). Each may come from a flag, ARX_<NAME> or [run].
RUN_OPTIONS: dict[str, tuple[type, Any]] = {
    "iterations": (int, 30),
    "budget": (float, None),
    "steps": (int, None),
    "timeout": (float, None),
    "group": (str, "A"),
    "llm": (str, None),
    "model": (str, None),
    "seed": (int, 0),
    "confirm": (int, 0),
    "confirm_margin": (float, 0.0),
    "rebaseline": (int, 0),
    "remeasure_after": (float, 3600.0),
    "history": (int, 12),
    "parallel": (int, 1),
    "executor": (str, "local"),
    "address": (str, None),
    "noise": (str, "auto"),
    "verify": (int, 3),
    "prune": (str, "on"),
}
LEVEL_OPTIONS: dict[str, tuple[type, Any]] = {
    "k": (int, 5), "m": (int, 2), "repair": (int, 1), "hook_timeout": (float, 10.0),
    "gate_timeout": (float, 60.0), "max_mechanism_kb": (int, 64), "judge_window": (int, 10),
    "step_aside": (bool, True),
}


def load_toml(root: Path) -> tomlkit.TOMLDocument:
    """Read arx.toml (comments kept, for writing back); a clear error when missing or broken."""
    path = Path(root) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"no {CONFIG_FILE} in {root}", hint="run `arx init` first")
    text = path.read_text()
    try:
        tomllib.loads(text)  # strict parse first: tomlkit accepts a few things tomllib does not
        return tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the line named") from None


def plain(value: Any) -> Any:
    """tomlkit items -> plain Python values."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def target_config(doc: Mapping[str, Any]) -> TargetConfig:
    table = plain(doc.get("target", {}))
    known = {f.name for f in dataclasses.fields(TargetConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in [target] of arx.toml: {', '.join(unknown)}",
            hint=f"known keys: {', '.join(sorted(known))}",
        )
    include = table.get("include", ())
    if isinstance(include, str):
        include = [include]
    if not isinstance(include, (list, tuple)) or not all(isinstance(p, str) for p in include):
        raise ConfigError("[target] include in arx.toml must be an array of paths",
                          hint='e.g. include = ["data/"]')
    table["include"] = tuple(include)
    files = table.get("files", ())
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, (list, tuple)) or not all(
            isinstance(p, str) and p and not p.startswith("/") and ".." not in p.split("/")
            for p in files):
        raise ConfigError("[target] files in arx.toml must be an array of repo-relative paths",
                          hint='e.g. files = ["config.py", "conf/config.yaml"]')
    if table.get("file", "train.py") in files or len(set(files)) != len(files):
        raise ConfigError("[target] files in arx.toml names a file twice (or the target's own "
                          "file)", hint="list each file once, besides [target] file")
    table["files"] = tuple(files)
    target = TargetConfig(**table)
    if target.direction not in ("min", "max"):
        raise ConfigError(
            f"[target] direction must be 'min' or 'max', not {target.direction!r}",
            hint="set direction = \"min\" when lower is better",
        )
    return target


def _coerce(name: str, kind: type, value: Any, origin: str) -> Any:
    if value is None:
        return None
    if name == "prune" and isinstance(value, bool):  # [run] prune = true reads as "on"
        value = "on" if value else "off"
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null") and kind is not str:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return word in ("true", "1", "yes", "on")
        raise ConfigError(f"{name} from {origin} must be true or false, got {value!r}",
                          hint=f"fix {origin}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("not a whole number")
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} from {origin} must be {kind.__name__}, got {value!r}",
            hint=f"fix {origin}",
        ) from None


def resolve(
    name: str,
    doc: Mapping[str, Any],
    flags: Mapping[str, Any],
    env: Mapping[str, str] = os.environ,
) -> RunConfig:
    """Resolve one run's configuration from flags, environment and arx.toml."""
    run_table = plain(doc.get("run", {}))
    level_table = plain(doc.get("levels", {}))
    llm_table = plain(doc.get("llm", {}))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for options, table, table_name in (
        (RUN_OPTIONS, run_table, "[run]"),
        (LEVEL_OPTIONS, level_table, "[levels]"),
    ):
        unknown = sorted(set(table) - set(options))
        if unknown:
            raise ConfigError(
                f"unknown key(s) in {table_name} of arx.toml: {', '.join(unknown)}",
                hint=f"known keys: {', '.join(sorted(options))}",
            )
        for key, (kind, default) in options.items():
            env_key = f"ARX_{key.upper()}"
            if flags.get(key) is not None:
                value, origin = flags[key], "flag"
            elif env.get(env_key) not in (None, ""):
                value, origin = env[env_key], f"${env_key}"
            elif key in table:
                value, origin = table[key], f"{table_name} {key} in arx.toml"
            elif key in ("llm", "model") and key in llm_table:
                # [llm] provider/model are the natural home of these two
                value, origin = llm_table[key], f"[llm] {key} in arx.toml"
            elif key == "llm" and "provider" in llm_table:
                value, origin = llm_table["provider"], "[llm] provider in arx.toml"
            else:
                value, origin = default, "default"
            values[key] = _coerce(key, kind, value, origin)
            sources[key] = origin.split(" ")[0] if origin.startswith("[") else origin
    if sources["prune"] == "default" and batched(values["parallel"], values["executor"]):
        values["prune"] = "off"  # batches train through an executor, with no watch on the curve
    if sources.get("judge_window") == "default":  # new runs: rules >= 7
        values["judge_window"] = judge_window_for(values["iterations"])
    config = RunConfig(name=name, target=target_config(doc), sources=sources,
                       rules=CURRENT_RULES, **values)
    check(config)
    return config


def batched(parallel: int, executor: str) -> bool:
    """Whether trials train as batches through an executor (``--parallel`` > 1 or ``ray``), where
    no learning curve is watched: pruning is off by default there, and ``--prune on`` refused."""
    return parallel > 1 or executor != "local"
def judge_window_for(iterations: int) -> int:
    """(Rules >= 7) The judge window of a run of ``iterations`` when arx.toml, the environment
    and the flags leave it unset: a sixth of the run, 4 at least and 10 at most, so with the
    default cadence (a Level-2 cycle every 10 iterations) every mechanism of a 30-iteration run
    is judged within it (5: activated after 10 and 20, judged after 15 and 25)."""
    return min(10, max(4, iterations // 6))


def check(config: RunConfig) -> None:
    """Refuse settings that cannot make a sensible run, naming the option."""
    if config.group.upper() not in GROUPS:
        raise ConfigError(f"--group must be one of A, B, C, D, not {config.group!r}")
    if config.iterations < 0:
        raise ConfigError("--iterations must be >= 0")
    if config.budget is not None and config.steps is not None:
        raise ConfigError(
            "--budget and --steps both set", hint="choose a time budget or a fixed step count"
        )
    if config.budget is not None and config.budget <= 0:
        raise ConfigError("--budget must be a positive number of seconds")
    if config.steps is not None and config.steps <= 0:
        raise ConfigError("--steps must be a positive step count")
    if config.budget is not None and not config.target.budget_constant:
        raise ConfigError(
            "--budget needs a constant in the target to set",
            hint="add budget_constant = \"TIME_BUDGET\" (your constant) to [target] in arx.toml",
        )
    if config.steps is not None and not config.target.steps_constant:
        raise ConfigError(
            "--steps needs a constant in the target to set",
            hint="add steps_constant = \"TRAIN_STEPS\" (your constant) to [target] in arx.toml",
        )
    if config.parallel < 1:
        raise ConfigError("--parallel must be >= 1")
    if config.executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, not {config.executor!r}")
    if config.address and config.executor != "ray":
        raise ConfigError("--address is for --executor ray", hint="add --executor ray")
    if config.max_mechanism_kb < 1:
        raise ConfigError("[levels] max_mechanism_kb must be >= 1")
    if config.judge_window < 0:
        raise ConfigError("[levels] judge_window must be >= 0",
                          hint="0 turns the outcome gate off; 10 is the default")
    if config.confirm < 0 or config.rebaseline < 0 or config.k < 1 or config.m < 1 \
            or config.remeasure_after < 0:
        raise ConfigError("--confirm, --rebaseline and --remeasure-after must be >= 0; "
                          "k and m >= 1")
    if config.prune not in ("on", "off"):
        raise ConfigError(f"--prune must be on or off, not {config.prune!r}",
                          hint="--prune off trains every trial to the end")
    if config.prune == "on" and batched(config.parallel, config.executor):
        raise ConfigError(
            f"--prune on (from {config.sources.get('prune', 'a setting')}) cannot stop trials "
            f"that train as a batch through an executor (--parallel {config.parallel}, "
            f"--executor {config.executor}): they always train to the end",
            hint="use --prune off, or --parallel 1 --executor local to prune")
    if config.verify < 0:
        raise ConfigError("--verify must be >= 0", hint="0 turns the held-out verification off")
    if config.noise not in ("off", "auto") and not (config.noise_sd() or 0) > 0:
        raise ConfigError(f"--noise must be off, auto or a positive number, not {config.noise!r}",
                          hint="--noise auto measures the spread of the baseline's metric")
    if config.confirm and not config.target.seed_constant:
        raise ConfigError(
            "--confirm needs a seed constant to vary",
            hint="add seed_constant = \"SEED\" to [target] in arx.toml",
        )
