"""Fixtures for the default target: tiny data prepared into a temporary ARX_DATA_DIR, a helper that
runs train.py as a real subprocess (copied beside prepare.py, constants rewritten), and a parser
for its summary block. Helpers are handed out as fixtures (`conftest` names tests/conftest.py)."""

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.train import prepare as prep

from support.repos import identify

TRAIN_DIR = Path(prep.__file__).resolve().parent

#: a config that trains in well under a second per step on one CPU core (grad accumulation 2,
#: a sliding-window layer and a full one)
TINY = {"DEPTH": "2", "ASPECT_RATIO": "16", "HEAD_DIM": "16", "WINDOW_PATTERN": '"SL"',
        "TOTAL_BATCH_SIZE": "2**10", "DEVICE_BATCH_SIZE": "8", "MAX_SEQ_LEN": "64",
        "TRAIN_STEPS": "6"}

WORDS = ("the king queen night sword crown love death honour speak lord lady thou thee doth "
         "never ever gentle noble fair foul storm sea ship letter ghost father son daughter "
         "garden river castle moon star blood wine bread friend enemy war peace méchant "
         "naïve café — “quoted” 你好").split()


def write_texts(folder, n_files=40, seed=0):
    """`n_files` small, different text files (one document each: under prep.DOC_CHARS)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        paras = []
        for _ in range(rng.randint(4, 8)):
            sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize()
                         + rng.choice(".!?") for _ in range(rng.randint(2, 5))]
            paras.append(" ".join(sentences))
        (folder / f"text_{i:02d}.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return folder


def parse_summary(stdout):
    """The `key: value` lines after the last `---` line, values stripped (a test-side parser)."""
    lines = stdout.splitlines()
    assert "---" in lines, f"no summary block in:\n{stdout}"
    tail = lines[len(lines) - lines[::-1].index("---"):]
    summary = {}
    for line in tail:
        key, sep, value = line.partition(":")
        assert sep and re.fullmatch(r"[a-z_][a-zA-Z_]*", key), f"not a `key: value` line: {line!r}"
        summary[key] = value.strip()
    return summary


def rewrite(source, overrides):
    """Rewrite top-level `NAME = value  # why` lines (the real patcher is libcst in arx.core)."""
    for name, value in overrides.items():
        source, n = re.subn(rf"^{name} = [^#\n]*?(\s+#)", rf"{name} = {value}\1", source,
                            flags=re.M)
        assert n == 1, f"{name} is not a constant of train.py"
    return source


@pytest.fixture(scope="session")
def train_dir():
    return TRAIN_DIR


@pytest.fixture(scope="session")
def make_texts():
    return write_texts


@pytest.fixture(scope="session")
def summary_of():
    return parse_summary


@pytest.fixture(scope="session")
def texts(tmp_path_factory):
    return write_texts(tmp_path_factory.mktemp("texts"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, texts):
    d = tmp_path_factory.mktemp("data")
    prep.prepare("text", [texts], d, quiet=True)
    return d


@pytest.fixture
def gpt_demo(tmp_path, data_dir, monkeypatch):
    """`arx init demo` of the default target, its data the tiny prepared corpus (ARX_DATA_DIR,
    one thread): the default setup would prepare another one, so it is taken out of arx.toml."""
    monkeypatch.setenv("ARX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    demo = tmp_path / "demo"
    assert CliRunner().invoke(cli, ["init", str(demo)]).exit_code == 0
    toml = demo / "arx.toml"
    toml.write_text(toml.read_text().replace('setup = "python prepare.py"\n', ""))
    # its runs test the loop on the real model: the learning curve's evaluations are tested in
    # test_train.py, and cost each trial here more than its 3 training steps (suite time)
    train = demo / "train.py"
    assert "CURVE_EVALS = 8" in train.read_text()
    # and the model is the tiny one (TINY) that trains in well under a second a step on one core
    model = {k: v for k, v in TINY.items() if k != "TRAIN_STEPS"}
    train.write_text(rewrite(train.read_text(), {**model, "CURVE_EVALS": "0"}))
    identify(git.Repo(demo)).git.commit("-am", "test: data prepared by the fixture, a tiny "
                                        "model, no curve")
    return demo


@pytest.fixture
def run_train(tmp_path, data_dir):
    """run_train(**constants, env=...) -> CompletedProcess of `python train.py` in a fresh dir."""

    def run(env=None, timeout=120, **overrides):
        work = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        work.mkdir()
        shutil.copy(TRAIN_DIR / "prepare.py", work)
        source = (TRAIN_DIR / "train.py").read_text()
        (work / "train.py").write_text(rewrite(source, {**TINY, **overrides}))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ARX_")}
        full_env.update({"ARX_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", **(env or {})})
        return subprocess.run([sys.executable, "train.py"], cwd=work, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run
