"""Offline, the ablation's rows that are the same runs by construction run once (issue #16,
defect 5): group A is the optuna row, group C is group D; one row each, labelled so."""

from __future__ import annotations

import csv

from arx.core.analysis import ablate as ab
from arx.core.config import load_toml, resolve
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.git import GitRepo


def test_offline_twins_run_once_and_are_labelled(toy_repo, tmp_path):
    lines = []
    result = ab.run_ablation(toy_repo, groups=["A", "B", "C", "D"], repeats=1, iterations=3,
                             baselines=["optuna", "random"], prefix="tw", out=tmp_path / "tw",
                             echo=lines.append)
    branches = {b.removeprefix("arx/") for b in GitRepo(toy_repo).branches("arx/*")}
    assert branches == {"tw-A-r1", "tw-B-r1", "tw-C-r1", "tw-random-r1"}  # 4 arms, not 6
    assert [r.label for r in result.rows] == [
        "A = optuna offline: A (Level 1)", "B (Level 1 + 1.5)",
        "C = D offline: C (Level 1 + 1.5 + 2)", "Random search, no LLM (Level 1)"]
    assert "ablate: C = D: the same runs offline (identical by construction), run once" in lines
    table = ab.to_markdown(result)
    assert "| C = D offline: C (Level 1 + 1.5 + 2) |" in table
    rows = list(csv.DictReader((tmp_path / "tw.csv").open()))
    assert [(r["arm"], r["same_as"]) for r in rows] == [("A", "optuna"), ("B", ""),
                                                        ("C", "D"), ("random", "")]


def test_with_an_llm_every_row_runs_and_the_optuna_row_is_arx_runs_offline_proposer(toy_repo):
    arms = ab.plan(["A", "C", "D"], ["optuna"])
    assert [(a.key, [t.key for t in twins]) for a, twins in ab.fold_twins(arms, False)] == \
        [("A", []), ("C", []), ("D", []), ("optuna", [])]
    assert [a.key for a, _ in ab.fold_twins(ab.plan(["C"], ["optuna"]), True)] == ["C", "optuna"]
    assert ab.group_rows_offline(toy_repo, {}, None)
    assert not ab.group_rows_offline(toy_repo, {"llm": "http://127.0.0.1:9/v1"},
                                     lambda ws: None)
    config = resolve("x", load_toml(toy_repo), {"seed": 2}, env={})
    mine = ab.offline_proposer(ab.Arm("optuna", "A", "optuna"), 2, config)
    theirs = offline_proposer(config)
    assert (type(mine), mine.seed, mine.crash_aware) == (type(theirs), 2, theirs.crash_aware)
