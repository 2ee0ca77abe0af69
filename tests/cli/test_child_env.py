"""No LLM key reaches a trial: a real `arx run` process whose target writes its environment.

The key variable ``[llm] api_key_env`` names (here MY_LLM_KEY) is in arx's environment whether
the run uses the LLM or not; the trials, one at a time in the worktree or several at once in
executor slots, must not see it, nor any provider's key variable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest
import tomlkit

from arx.core.execution.env import PROVIDER_KEY_ENV

ARX = [sys.executable, "-m", "arx.cli.main"]
PLANTED = "planted-secret"
# written into the toy target right after its imports: each trial dumps os.environ to a file
DUMP = """import json as _json, os as _os
_json.dump(dict(_os.environ), open(_os.path.join({where!r}, f"env-{{_os.getpid()}}.json"), "w"))
"""


def dump_env_in_trials(repo: Path, where: Path) -> None:
    """The target writes its environment to ``where``; arx.toml reads the key from MY_LLM_KEY."""
    where.mkdir()
    train = repo / "train.py"
    train.write_text(train.read_text().replace(
        "import time\n", "import time\n" + DUMP.format(where=str(where)), 1))
    doc = tomlkit.parse((repo / "arx.toml").read_text())
    doc["llm"]["api_key_env"] = "MY_LLM_KEY"
    (repo / "arx.toml").write_text(tomlkit.dumps(doc))
    g = git.Repo(repo)
    g.index.add(["train.py", "arx.toml"])
    g.index.commit("test: a target that shows its environment; the LLM key in MY_LLM_KEY")


@pytest.mark.parametrize("args, planted", [
    # offline because no provider key is set: the named key is still in the environment
    ([], ("MY_LLM_KEY",)),
    # several trials at once in executor slots, with every provider's key set too
    (["--parallel", "2", "--llm", "offline"], ("MY_LLM_KEY", *PROVIDER_KEY_ENV)),
], ids=["one-at-a-time", "parallel"])
def test_the_llm_key_never_reaches_a_trial(toy_repo, tmp_path, args, planted):
    where = tmp_path / "envs"
    dump_env_in_trials(toy_repo, where)
    env = {k: v for k, v in os.environ.items() if "KEY" not in k and not k.startswith("ARX_")}
    env.update({name: PLANTED for name in planted}, ARX_TEST_VISIBLE="yes")
    proc = subprocess.run([*ARX, "-C", str(toy_repo), "run", "--name", "env", "--iterations",
                           "2", *args], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "offline proposer" in proc.stderr
    dumps = sorted(where.glob("env-*.json"))
    assert len(dumps) >= 3  # the baseline and a trial per iteration at least
    for path in dumps:
        seen = json.loads(path.read_text())
        assert seen["ARX_TEST_VISIBLE"] == "yes"  # the trial's environment is arx's...
        assert not {*planted, *PROVIDER_KEY_ENV} & set(seen), path.name  # ...without any key
        assert PLANTED not in path.read_text()
