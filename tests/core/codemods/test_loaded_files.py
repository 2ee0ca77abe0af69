"""``sources.loaded_files``: the config files a script reads through a loader call whose path
is a literal (or a module-level string constant), with the line of the first load."""

from __future__ import annotations

from arx.core.codemods.sources import loaded_files

SCRIPT = '''import json, tomllib, yaml
from pathlib import Path
from omegaconf import OmegaConf
CFG = "cfg.toml"
a = yaml.safe_load(open("conf/config.yaml"))
b = tomllib.load(open(CFG, "rb"))
with open("params.json") as f:
    c = json.load(f)
def main():
    with open("x.yaml") as g:
        yaml.safe_load(g)
    json.loads(Path("a.json").read_text())
    OmegaConf.load("o.yaml")
    yaml.safe_load(open("conf/config.yaml"))  # the same file again: its first line counts
'''


def test_loader_calls_with_literal_paths_are_found_in_order():
    assert loaded_files(SCRIPT) == [("conf/config.yaml", 5), ("cfg.toml", 6),
                                    ("params.json", 8), ("x.yaml", 11), ("a.json", 12),
                                    ("o.yaml", 13)]


def test_paths_built_at_run_time_and_other_calls_are_not():
    script = '''import json, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
with open(f"conf/{name}.yaml") as f:
    yaml.safe_load(f)
data = open("data.txt").read()
json.dumps({"a": 1})
'''
    assert loaded_files(script) == []
    assert loaded_files("def broken(:\n") == []
