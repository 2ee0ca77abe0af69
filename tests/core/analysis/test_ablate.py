"""`arx ablate` on the toy target: the table's arithmetic against the branches' own traces,
resume (skip finished, resume interrupted, extend), unavailable groups; the random proposer."""

from __future__ import annotations

import csv
import json
import statistics
import time

import git
import matplotlib.image
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.cli.report_cmd import ablate
from arx.core.analysis import ablate as ab
from arx.core.app.runs import run_status
from arx.core.errors import ArxError, ConfigError, LLMError
from arx.core.loop.engine import Engine
from arx.core.loop.params import ParamSpec
from arx.core.loop.space import ParameterSpace
from arx.core.loop.trace import read_trace
from arx.core.proposers.base import ProposalRequest
from arx.core.proposers.offline import OptunaProposer
from arx.core.proposers.random_search import RandomProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

cli.add_command(ablate)


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def trace_delta(repo, name):
    """best - baseline recomputed from the branch's trace, independently of arx.core.app.runs."""
    text = git.Repo(repo.root).git.show(f"arx/{name}:runs/{name}/trace.jsonl")
    recs = [r for r in map(json.loads, text.splitlines()) if r["event"] == "trial"]
    base = next(r["metric"] for r in recs if r["status"] == "baseline")
    best = [r["metric"] for r in recs if r["status"] in ("baseline", "keep")][-1]
    return best - base


def tips(repo):
    return {b: repo.log(b, max_count=1)[0].sha for b in repo.branches("arx/*")}


def test_ablate_table_matches_the_traces_and_a_rerun_skips_everything(toy_repo, tmp_path):
    out = tmp_path / "abl"
    args = ["-C", str(toy_repo), "ablate", "--groups", "A,B", "--repeats", "2",
            "--iterations", "6", "--baseline", "random", "--name", "ab", "--out", str(out)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    repo = GitRepo(toy_repo)
    names = {f"ab-{k}-r{r}" for k in ("A", "B", "random") for r in (1, 2)}
    assert set(b.removeprefix("arx/") for b in repo.branches("arx/*")) == names
    for name in names:  # repeat r uses seed r in every row; each run did all 6 iterations
        config = json.loads(git.Repo(toy_repo).git.show(f"arx/{name}:runs/{name}/config.json"))
        assert config["seed"] == int(name[-1]) and config["iterations"] == 6
        assert config["group"] == ("A" if "random" in name else name.split("-")[1])
        assert run_status(repo, name).state == "finished"
    random_proposers = {r.get("proposer") for r in read_trace(repo, "ab-random-r1")
                        if r["kind"] == "trial"}
    assert random_proposers == {"random"}

    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["arm"] for r in rows] == ["A", "B", "random"]
    means = {}
    for row in rows:
        deltas = [trace_delta(repo, f"ab-{row['arm']}-r{r}") for r in (1, 2)]
        assert [float(row["R1"]), float(row["R2"])] == pytest.approx(deltas, abs=1e-12)
        assert all(d <= 0 for d in deltas)  # min metric: best is never worse than baseline
        assert float(row["mean"]) == pytest.approx(statistics.fmean(deltas))
        assert float(row["std"]) == pytest.approx(statistics.stdev(deltas))  # n - 1
        means[row["arm"]] = statistics.fmean(abs(d) for d in deltas)
        assert float(row["mean_abs"]) == pytest.approx(means[row["arm"]])
        assert row["runs"] == f"ab-{row['arm']}-r1 ab-{row['arm']}-r2"
        assert row["reference"] == "A" and row["state"] == "finished"
    for row in rows:
        assert float(row["ratio"]) == pytest.approx(means[row["arm"]] / means["A"])

    # the printed table: the paper's layout, the sign convention stated, numbers as in the CSV
    assert "| Group | R1 | R2 | Mean ± Std | Ratio vs A (mean \\|delta\\|) |" in result.output
    assert "more negative is better" in result.output
    a = rows[0]
    assert (f"| A (Level 1) | {float(a['R1']):+.4f} | {float(a['R2']):+.4f} | "
            f"{float(a['mean']):+.4f} ± {float(a['std']):.4f} | 1.00x |") in result.output
    md = out.with_suffix(".md").read_text()
    assert md.count("| Group |") == 1 and "![ablation](abl.png)" in md
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[2] in (3, 4)

    before = tips(repo)
    csv_before = out.with_suffix(".csv").read_text()
    started = time.monotonic()
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert time.monotonic() - started < 10
    assert tips(repo) == before  # no new commits
    assert again.output.count("already finished, skipped") == 6
    assert out.with_suffix(".csv").read_text() == csv_before


class StopAt(OptunaProposer):
    """The LLM went away at iteration ``stop``: the run stops, resumable."""

    def __init__(self, seed, stop):
        super().__init__(seed=seed)
        self.stop = stop

    def propose(self, request, feedback=None):
        if request.iteration == self.stop:
            raise LLMError("endpoint gone")
        return super().propose(request, feedback)


def test_ablate_resumes_interrupted_runs_and_extends_finished_ones(toy_repo, tmp_path):
    ws = open_run(toy_repo, {"iterations": 5, "group": "A", "seed": 1}, name="rs-A-r1")
    with pytest.raises(ArxError):
        Engine(ws, StopAt(1, stop=3)).run()
    ws.close(remove_worktree=False)
    repo = GitRepo(toy_repo)
    assert run_status(repo, "rs-A-r1").state == "interrupted"
    done_before = [r for r in read_trace(repo, "rs-A-r1")]

    lines = []
    result = ab.run_ablation(toy_repo, groups=["A"], repeats=2, iterations=5, prefix="rs",
                             out=tmp_path / "rs", echo=lines.append)
    assert "ablate: rs-A-r1: resumed (A (Level 1), seed 1)" in lines
    assert "ablate: rs-A-r2: started (A (Level 1), seed 2)" in lines
    trace = read_trace(repo, "rs-A-r1")
    assert trace[:len(done_before)] == done_before  # nothing redone
    assert [r["iteration"] for r in trace if r["kind"] == "trial"] == [1, 2, 3, 4, 5]
    assert [o.state for o in result.rows[0].outcomes] == ["finished", "finished"]

    result = ab.run_ablation(toy_repo, groups=["A"], repeats=2, iterations=7, prefix="rs",
                             out=tmp_path / "rs", echo=lines.append)
    assert [o.action for o in result.rows[0].outcomes] == ["extended", "extended"]
    assert run_status(repo, "rs-A-r2").iterations_done == 7
    result = ab.run_ablation(toy_repo, groups=["A"], repeats=2, iterations=7, prefix="rs",
                             out=tmp_path / "rs")
    assert [o.action for o in result.rows[0].outcomes] == ["skipped", "skipped"]


def test_groups_the_engine_does_not_offer_are_reported_unavailable(toy_repo, tmp_path,
                                                                   monkeypatch):
    from arx.core import config

    monkeypatch.setattr(config, "GROUPS", ("A", "B", "C"))  # an arx without group D
    real_run = Engine.run

    def run(self):  # an engine without Level 2
        if self.config.group == "C":
            raise ArxError("--group C: Level 2 is not built yet")
        return real_run(self)

    monkeypatch.setattr(Engine, "run", run)
    result = ab.run_ablation(toy_repo, groups=["A", "C", "D"], repeats=1, iterations=2,
                             prefix="un", out=tmp_path / "un")
    a, c, d = result.rows
    assert a.mean is not None and c.unavailable and "not built" in c.unavailable
    assert d.unavailable and "--group must be one of" in d.unavailable
    assert not GitRepo(toy_repo).branch_exists("arx/un-D-r1")  # refused before any branch
    table = ab.to_markdown(result)
    assert "| C (Level 1 + 1.5 + 2) | - | unavailable: --group C: Level 2 is not built yet | - |" \
        in table
    states = [r["state"] for r in csv.DictReader((tmp_path / "un.csv").open())]
    assert states[0] == "finished" and states[1].startswith("unavailable: ")


def test_plan_refuses_unknown_groups_and_baselines():
    assert [a.key for a in ab.plan(["a", "B", "D", "A"], ["random", "optuna"])] == \
        ["A", "B", "D", "random", "optuna"]
    assert ab.plan([], ["optuna"])[0].group == "A"
    with pytest.raises(ConfigError, match="--groups"):
        ab.plan(["E"])
    with pytest.raises(ConfigError, match="--baseline"):
        ab.plan(["A"], ["grid"])
    with pytest.raises(ConfigError, match="nothing to run"):
        ab.plan([])


def test_the_papers_table_2_arithmetic():
    """Table 2 of the paper from its own deltas: mean ± sample std and the ratio vs A."""
    def row(key, deltas):
        arm = ab.Arm(key, key, "default")
        return ab.Row(arm, tuple(ab.Outcome(f"p-{key}-r{i}", i, "finished", "skipped",
                                            delta=d) for i, d in enumerate(deltas, 1)))

    result = ab.Ablation("paper", 30, 3, "val_bpb", "min", [
        row("A", [-0.009, -0.008, -0.011]), row("B", [-0.000, -0.010, -0.009]),
        row("C", [-0.065, -0.011, -0.058])])
    a, b, c = result.rows
    assert (round(a.mean, 3), round(a.std, 3)) == (-0.009, 0.002)
    assert (round(b.mean, 3), round(b.std, 3)) == (-0.006, 0.006)
    assert (round(c.mean, 3), round(c.std, 3)) == (-0.045, 0.029)
    assert result.ratio(c) == pytest.approx(0.134 / 0.028)  # the paper's "5x" (rounded means)
    assert result.ratio(c) / result.ratio(b) == pytest.approx(0.134 / 0.019)  # "6.4x"
    table = ab.to_markdown(result)
    assert "| C (Level 1 + 1.5 + 2) | -0.0650 | -0.0110 | -0.0580 | -0.0447 ± 0.0294 | 4.79x |" \
        in table


SPACE = ParameterSpace([
    ParamSpec("LR", "float", 0.02, 0.002, 0.2, log=True),
    ParamSpec("BATCH", "int", 256, 32, 2048, pow2=True),
    ParamSpec("DEPTH", "int", 6, 1, 24, log=True),
    ParamSpec("WARMUP", "float", 0.5, 0.0, 1.0),
    ParamSpec("ACT", "str", "relu", choices=("relu", "gelu", "silu")),
    ParamSpec("BIAS", "bool", True, choices=(False, True)),
    ParamSpec("MODE", "str", "ok", choices=("ok",), locked=True),
])
BEST = {"LR": 0.02, "BATCH": 256, "DEPTH": 6, "WARMUP": 0.5, "ACT": "relu", "BIAS": True,
        "MODE": "ok"}


def request(i, focus=None):
    active = tuple(s.name for s in SPACE.tunable())
    return ProposalRequest(iteration=i, prompt="", active=active, best_config=BEST, space=SPACE,
                           focus=focus)


def test_random_proposer_is_seeded_stateless_and_stays_in_the_space():
    p = RandomProposer(seed=3)
    seen = set()
    for i in range(1, 200):
        (prop,) = p.propose(request(i))
        assert 1 <= len(prop.changes) <= 2 and "MODE" not in prop.changes
        assert SPACE.validate(prop.changes, BEST) == dict(prop.changes)  # typed, in range, no noop
        if "BATCH" in prop.changes:
            assert prop.changes["BATCH"] & (prop.changes["BATCH"] - 1) == 0
        seen.update(prop.changes)
        assert RandomProposer(seed=3).propose(request(i)) == [prop]  # (seed, iteration) decide
    assert seen == {"LR", "BATCH", "DEPTH", "WARMUP", "ACT", "BIAS"}
    assert [RandomProposer(seed=4).propose(request(i))[0] for i in range(1, 9)] != \
        [p.propose(request(i))[0] for i in range(1, 9)]
    lrs = [p.propose(request(i, focus=("LR",)))[0].changes["LR"] for i in range(1, 300)]
    assert sum(lr < 0.02 for lr in lrs) > 0.35 * len(lrs)  # log-uniform: half the decades lie below
    assert all(set(p.propose(request(i, focus=("ACT",)))[0].changes) == {"ACT"}
               for i in range(1, 20))
