"""init adopts the local files a script keeps its settings in: config files read through a
loader call with a literal path, and config modules it imports; tracked files only."""

from __future__ import annotations

import pytest

from arx.core.app.adopt import adopt
from arx.core.config import TargetConfig
from arx.core.errors import ConfigError
from arx.core.repo.git import GitRepo

from support.repos import git_repo

SCRIPT = '''import json
import yaml
import model
from conf import settings as s
import config

CFG = "conf/train.yaml"
WARMUP = 10
with open(CFG) as f:
    cfg = yaml.safe_load(f)
extra = json.load(open("params.json"))
print("loss: 1.0")
'''
FILES = {"config.py": "LR = 0.5\nDEPTH = 12\n", "conf/__init__.py": "",
         "conf/settings.py": "DROPOUT = 0.1\n", "model.py": "WIDTH = 64\n",
         "conf/train.yaml": "optim:\n  lr: 0.5  # kept\n"}


def checkout(tmp_path, script=SCRIPT, untracked=None):
    repo = git_repo(tmp_path)
    for path, text in {"train.py": script, **FILES}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    repo.git.add(A=True)
    repo.index.commit("mine")
    for path, text in (untracked or {}).items():
        (tmp_path / path).write_text(text)
    return GitRepo(tmp_path)


def adopted(tmp_path, script=SCRIPT, untracked=None):
    repo = checkout(tmp_path, script, untracked)
    return adopt(tmp_path, repo, script, TargetConfig(file="train.py", metric="loss"))


def test_config_modules_and_loaded_files_join_the_target(tmp_path):
    a = adopted(tmp_path, untracked={"params.json": '{"batch": 32}'})
    assert a.target.files == ("conf/train.yaml", "conf/settings.py", "config.py")
    names = [c.name for c in a.constants]
    assert names == ["CFG", "WARMUP", "conf/train.yaml:optim.lr", "conf/settings.py:DROPOUT",
                     "config.py:LR", "config.py:DEPTH"]  # model.py: its name says no config
    notes = "\n".join(a.notes)
    assert "settings of conf/train.yaml (read at line 10) join the target" in notes
    assert "settings of config.py (imported as config at line 5)" in notes
    assert "config.py:LR, config.py:DEPTH" in notes
    assert "params.json (read at line 11) holds settings but git does not track it" in notes
    assert "a YAML file (yaml.safe_load) at line 10" not in notes  # joined: no override note


def test_a_script_without_settings_adopts_any_local_module(tmp_path):
    script = "import model\nimport numpy\nprint('loss: 1.0')\n"
    a = adopted(tmp_path, script)
    assert a.target.files == ("model.py",)
    assert [c.name for c in a.constants] == ["model.py:WIDTH"]


def test_nothing_joins_from_outside_the_repository_or_a_broken_file(tmp_path):
    script = "import yaml\nimport os\nc = yaml.safe_load(open('/etc/x.yaml'))\nprint(1)\n"
    with pytest.raises(ConfigError, match="has nothing arx can tune"):
        adopted(tmp_path, script)
    script = "import bad\nprint(1)\n"
    repo = checkout(tmp_path / "b", script)
    (tmp_path / "b" / "bad.py").write_text("LR = (\n")
    repo.commit(["bad.py"], "broken")
    with pytest.raises(ConfigError, match=r"bad\.py \(imported as bad at line 1\) was not "
                                          r"adopted: the source does not parse"):
        adopt(tmp_path / "b", repo, script, TargetConfig(file="train.py", metric="loss"))
