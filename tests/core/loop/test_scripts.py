"""What a real script needs from the loop: no-op detection, constraints, locked budget/steps/seed
constants, and a resume that notices a changed [target]. Real git, real subprocess trials."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import git
import pytest

from arx.core.app.scaffold import init_repo
from arx.core.codemods.constants import discover_constants
from arx.core.config import RunConfig, TargetConfig
from arx.core.errors import ConfigError, ProposalError, RunError
from arx.core.loop.constraints import parse_constraints
from arx.core.loop.engine import Engine
from arx.core.loop.noeffect import command_overrides
from arx.core.loop.space import ParameterSpace, run_space
from arx.core.proposers.base import ProposalRequest
from arx.core.proposers.offline import OptunaProposer, offline_proposer
from arx.core.repo.workspace import open_run
from arx.core.states import TrialState

from support.repos import edit_toml, git_repo
from support.styles import DICT_CALL

ARGPARSE_NOOP = '''import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--depth", type=int, default=4)
args = parser.parse_args()
print("---")
print(f"loss: {1 + abs(args.lr - 0.01) + 0.01 * args.depth:.6f}")
'''


def adopted(root: Path, script: str, command_args: str = "", **kw) -> Path:
    repo = git_repo(root)
    (root / "train.py").write_text(script)
    repo.index.add(["train.py"])
    repo.index.commit("mine")
    init_repo(root, target_file="train.py", command=f"{sys.executable} train.py{command_args}",
              metric="loss", **kw)
    return root


def run(root, proposer=None, **flags):
    ws = open_run(root, {"iterations": 6, **flags}, name=flags.pop("name", "t"))
    try:
        Engine(ws, proposer or offline_proposer(ws.config)).run()
    finally:
        ws.close(remove_worktree=True)


def trace(root, name="t"):
    text = git.Repo(root).git.show(f"arx/{name}:runs/{name}/trace.jsonl")
    return [e for e in map(json.loads, text.splitlines()) if e.get("event") == "trial"]


def test_flags_that_override_tuned_parameters_end_as_no_effect_and_stop_the_run(tmp_path):
    root = adopted(tmp_path / "p", ARGPARSE_NOOP, " --lr 0.5 --depth=3")
    warnings = command_overrides("python train.py --lr 0.5 --depth=3", "train.py",
                                 ["--lr", "--depth", "OTHER"], root)
    assert warnings[0].startswith("the command passes `--lr 0.5`, which sets --lr")
    assert "`--depth=3`, which sets --depth" in warnings[1] and len(warnings) == 2
    (tmp_path / "lr.py").write_text("LR = 0.1\n")  # a config file as the target: the script
    assert command_overrides("python lr.py --lr 0.5", "c.yaml", ["optim.lr"], tmp_path) == [
        "the command passes `--lr 0.5`, which sets optim.lr: arx's changes to it have no "
        "effect"]  # reads it, it does not override it; its flags still do
    ws = open_run(root, {"iterations": 10}, name="t")
    try:
        with pytest.raises(RunError, match="last 3 trials measured exactly the best") as exc:
            Engine(ws, offline_proposer(ws.config)).run()
        assert "--lr 0.5" in exc.value.message and "arx run --resume t" in exc.value.hint
    finally:
        ws.close(remove_worktree=False)
    records = [json.loads(line) for line in
               (ws.path / ws.trace_rel).read_text().splitlines()]
    states = [r["status"] for r in records if r.get("event") == "trial" and r["kind"] == "trial"]
    assert states == [TrialState.NO_EFFECT.value] * 3


def test_config_files_in_the_command_are_read_for_what_they_set(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "small.py").write_text("n_layer = 2\nlearning_rate = 1e-3\n")
    found = command_overrides("python train.py config/small.py --compile=False", "train.py",
                              ["config.n_layer", "n_head", "LR"], tmp_path)
    assert found == ["the command passes the config file config/small.py, which sets "
                     "config.n_layer: arx's changes to them have no effect"]
    assert "ignores arx's changes" in command_overrides(
        "python train.py --config c.yaml", "train.py", ["lr"], tmp_path)[0]


def test_constraints_are_parsed_safely_and_refuse_proposals():
    names = ["config.n_embd", "config.n_head", "--batch-size"]
    (c,) = parse_constraints(["n_embd % n_head == 0 and batch_size <= 2 ** 10"], names)
    assert c.refs == {"batch_size": "--batch-size", "n_embd": "config.n_embd",
                      "n_head": "config.n_head"}
    assert c.holds({"config.n_embd": 64, "config.n_head": 4, "--batch-size": 32})
    assert not c.holds({"config.n_embd": 64, "config.n_head": 3, "--batch-size": 32})
    for bad in ["__import__('os').system('x')", "n_embd.__class__", "[x for x in n_head]",
                "lambda: 1", "open('f')", "n_embd if n_head else 1"]:
        with pytest.raises(ConfigError):
            parse_constraints([bad], names)
    with pytest.raises(ConfigError, match="did you mean config.n_head"):
        parse_constraints(["config.n_heads > 1"], names)
    table = {"constraints": ["config.n_embd % config.n_head == 0"],
             "config.n_embd": {"type": "int", "value": 64, "low": 8, "high": 512},
             "config.n_head": {"type": "int", "value": 4, "low": 1, "high": 16}}
    space = ParameterSpace.from_toml(table)
    with pytest.raises(ProposalError, match="does not hold .*n_head=3") as exc:
        space.validate({"config.n_head": 3}, space.defaults())
    assert exc.value.reason == "constraint"
    assert space.validate({"config.n_head": 8}, space.defaults()) == {"config.n_head": 8}
    assert "constraints" in str(space.to_toml())


def test_constraints_name_settings_of_other_files_by_their_last_part():
    names = ["config.py:n_embd", "conf/c.yaml:model.n_head", "LR"]
    (c,) = parse_constraints(["n_embd % n_head == 0"], names)
    assert c.refs == {"n_embd": "config.py:n_embd", "n_head": "conf/c.yaml:model.n_head"}
    assert not c.holds({"config.py:n_embd": 64, "conf/c.yaml:model.n_head": 3})


def test_a_constrained_run_never_trains_a_configuration_that_breaks_it(tmp_path):
    root = adopted(tmp_path / "c", DICT_CALL)
    edit_toml(root, params={}, locked=["config.learning_rate", "config.n_layer", "config.dropout",
                                       "config.eval_interval", "config.wandb_log",
                                       "config.max_iters"])
    doc = (root / "arx.toml").read_text().replace(
        "[params]\n", '[params]\nconstraints = ["n_embd % n_head == 0"]\n', 1)
    (root / "arx.toml").write_text(doc)
    g = git.Repo(root)
    g.index.add(["arx.toml"])
    g.index.commit("constrain")
    run(root, iterations=8)
    trained = [r for r in trace(root) if r["status"] != TrialState.INVALID.value]
    assert len(trained) > 3
    assert all(r["config"]["config.n_embd"] % r["config"]["config.n_head"] == 0 for r in trained)
    assert not any(r["status"] == TrialState.CRASH.value for r in trained)


def test_steps_budget_and_seed_constants_are_locked_at_run_start(toy_repo):
    edit_toml(toy_repo, target={"steps_constant": "DEPTH"}, locked=["MODE"])
    source = (toy_repo / "train.py").read_text()
    config = RunConfig(name="x", target=TargetConfig(steps_constant="DEPTH"), rules=2)
    assert run_space(toy_repo, source, config).specs["DEPTH"].locked
    old = replace(config, rules=1)  # a run made before the rule keeps arx.toml's locks
    assert not run_space(toy_repo, source, old).specs["DEPTH"].locked
    run(toy_repo, iterations=8, steps=5)
    assert not any("DEPTH" in r["changes"] for r in trace(toy_repo))
    assert all(r["config"]["DEPTH"] == 5 for r in trace(toy_repo))


def test_crashed_configurations_inform_the_offline_proposer(toy_repo):
    """DEPTH > 8 always crashed; metric improves with DEPTH: without crash information TPE
    keeps proposing the crashed region, with it (rules 2) much less often."""
    space = ParameterSpace.from_toml({"DEPTH": {"type": "int", "value": 4, "low": 1,
                                                "high": 16}})
    history = []
    for k, depth in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16]):
        crashed = depth > 8
        history.append({"iteration": k, "config": {"DEPTH": depth}, "changes": {"DEPTH": depth},
                        "status": "crash" if crashed else "discard",
                        "metric": None if crashed else 10.0 - depth})
    def crashed_share(proposer):
        hits = 0
        for i in range(40):
            req = ProposalRequest(iteration=100 + i, prompt="", active=("DEPTH",),
                                  best_config={"DEPTH": 8}, space=space, history=tuple(history))
            (p,) = proposer.propose(req)
            hits += p.changes.get("DEPTH", 0) > 8
        return hits / 40

    blind, aware = crashed_share(OptunaProposer(seed=0)), crashed_share(
        OptunaProposer(seed=0, crash_aware=True))
    assert aware < blind / 2, (aware, blind)


def test_resume_tells_a_changed_target_and_takes_it_on_request(toy_repo):
    ws = open_run(toy_repo, {"iterations": 2}, name="r")
    ws.close(remove_worktree=False)  # a run stopped before its baseline
    edit_toml(toy_repo, target={"timeout_margin": 30.0})
    ws = open_run(toy_repo, {}, resume="r")
    try:
        assert ws.config.target.timeout_margin == 120.0
        assert "differs from the run's (timeout_margin)" in ws.notices[0]
        assert "--take-target" in ws.notices[0]
    finally:
        ws.close(remove_worktree=False)
    ws = open_run(toy_repo, {}, resume="r", take_target=True)
    try:
        assert ws.config.target.timeout_margin == 30.0
        stored = RunConfig.from_json(git.Repo(toy_repo).git.show("arx/r:runs/r/config.json"))
        assert stored.target.timeout_margin == 30.0
        assert git.Repo(toy_repo).commit("arx/r").summary.startswith(
            "resume: [target] from arx.toml (timeout_margin)")
    finally:
        ws.close(remove_worktree=True)


def test_discovered_names_survive_toml_trailers_and_subjects(tmp_path):
    root = adopted(tmp_path / "n", ARGPARSE_NOOP)
    run(root, iterations=4)
    keeps = [c for c in git.Repo(root).iter_commits("arx/t") if " keep " in c.summary]
    names = {c.name for c in discover_constants((root / "train.py").read_text())}
    assert names == {"--lr", "--depth"}
    for commit in keeps:
        assert any(n in commit.summary for n in names)
        assert set(json.loads(commit.trailers_dict["Arx-Changes"][0])) <= names


def test_locking_a_value_assigned_twice_says_so(toy_repo):
    source = (toy_repo / "train.py").read_text().replace('MODE = "ok"', 'DEVICE = "cpu"\nMODE = "ok"')
    source += "\nif MODE == 'x':\n    DEVICE = 'cuda'\n"
    (toy_repo / "train.py").write_text(source)
    g = git.Repo(toy_repo)
    g.index.add(["train.py"])
    g.index.commit("a device")
    edit_toml(toy_repo, locked=["MODE", "DEVICE"])
    config = RunConfig(name="x", target=TargetConfig(), rules=2)
    with pytest.raises(ConfigError, match=r"names DEVICE, which is not a parameter "
                                          r"\(line \d+: assigned 2 times in module scope\)"):
        run_space(toy_repo, source, config)
