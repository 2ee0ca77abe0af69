"""A target of several files: packed as one source, scanned and patched file by file, each
by its own surface, the other files' settings named PATH:NAME."""

from __future__ import annotations

import pytest

from arx.core.codemods import bundle
from arx.core.codemods.constants import apply_changes, discover_constants, scan_parameters
from arx.core.errors import ConfigError, PatchError

SCRIPT = "import config\nWARMUP = 10  # steps\nprint(config.LR)\n"
MODULE = "LR = 0.5  # learning rate\nDEPTH = 12\n"
YAML = "# settings\noptim:\n  lr: 0.5   # the optimizer's\n  betas: [0.9, 0.95]\nmodel:\n  depth: 12\n"


def files():
    return {"train.py": SCRIPT, "config.py": MODULE, "conf/config.yaml": YAML}


def test_pack_and_unpack_round_trip_any_text():
    texts = {"train.py": SCRIPT, "a b/ünï.yaml": "x: 1\n\x1fodd\n", "empty.py": ""}
    source = bundle.pack(texts)
    assert bundle.is_bundle(source) and not bundle.is_bundle(SCRIPT)
    assert bundle.unpack(source) == texts
    assert list(bundle.unpack(source)) == list(texts)  # the script stays first
    with pytest.raises(PatchError, match="one file"):
        bundle.unpack(SCRIPT)


def test_names_split_at_the_first_known_file():
    paths = ["train.py", "config.py", "conf/config.yaml"]
    assert bundle.file_of("config.py:LR", paths) == ("config.py", "LR")
    assert bundle.file_of("conf/config.yaml:optim.lr", paths) == ("conf/config.yaml", "optim.lr")
    assert bundle.file_of("--lr", paths) == ("train.py", "--lr")
    assert bundle.file_of("config.LR", paths) == ("train.py", "config.LR")  # a dict's entry
    assert bundle.split_changes({"WARMUP": 5, "config.py:LR": 0.1, "config.py:DEPTH": 4},
                                paths) == {"train.py": {"WARMUP": 5},
                                           "config.py": {"LR": 0.1, "DEPTH": 4}}


def test_scan_names_each_file_s_settings_by_its_path():
    scan = scan_parameters(bundle.pack(files()), "train.py")
    names = [c.name for c in scan.found]
    assert names == ["WARMUP", "config.py:LR", "config.py:DEPTH", "conf/config.yaml:optim.lr",
                     "conf/config.yaml:optim.betas", "conf/config.yaml:model.depth"]
    by = {c.name: c for c in scan.found}
    assert by["config.py:LR"].line == 1 and by["config.py:LR"].comment == "learning rate"
    assert by["conf/config.yaml:model.depth"].surface == "yaml"
    assert discover_constants(bundle.pack(files())) == list(scan.found)


def test_patch_rewrites_each_file_with_its_own_surface_and_nothing_else():
    source = bundle.pack(files())
    out = bundle.unpack(apply_changes(source, {"config.py:LR": 0.02, "WARMUP": 5,
                                               "conf/config.yaml:optim.lr": 0.001}))
    assert out["train.py"] == SCRIPT.replace("WARMUP = 10", "WARMUP = 5")
    assert out["config.py"] == MODULE.replace("LR = 0.5", "LR = 0.02")
    assert out["conf/config.yaml"] == YAML.replace("lr: 0.5", "lr: 0.001")  # comment kept
    assert apply_changes(source, {}) == source


def test_a_bad_change_names_its_file():
    source = bundle.pack(files())
    with pytest.raises(PatchError, match=r"^config\.py: NOPE is not a parameter"):
        apply_changes(source, {"config.py:NOPE": 1})
    with pytest.raises(PatchError, match=r"conf/config\.yaml: optim\.zz is not a setting"):
        apply_changes(source, {"conf/config.yaml:optim.zz": 1})
    broken = bundle.pack({**files(), "conf/config.yaml": "a: [1\n"})
    with pytest.raises(PatchError, match=r"^conf/config\.yaml: the YAML file does not parse"):
        scan_parameters(broken, "train.py")


def test_target_files_read_and_write_a_checkout(tmp_path):
    for path, text in files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    target = bundle.TargetFiles(tmp_path, tuple(files()))
    source = target.read()
    assert bundle.unpack(source) == files()
    target.write(apply_changes(source, {"config.py:DEPTH": 4}))
    assert (tmp_path / "config.py").read_text() == MODULE.replace("12", "4")
    assert (tmp_path / "train.py").read_text() == SCRIPT
    alone = bundle.TargetFiles(tmp_path, ("train.py",))
    assert alone.read() == SCRIPT  # one file: the file itself, as always
    with pytest.raises(PatchError, match="the target's files are train.py"):
        alone.write(source)
    (tmp_path / "config.py").unlink()
    with pytest.raises(ConfigError, match="config.py is not in"):
        target.read()
