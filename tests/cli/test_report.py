"""`arx report` (and the `arx ablate` wiring) on toy runs: real git, real figures, no mocks."""

from __future__ import annotations

import json

import matplotlib.image
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.cli.report_cmd import ablate, report
from arx.core.analysis.figures import build_figure, markers
from arx.core.analysis.report import RunData, load_run, write_report
from arx.core.analysis.summary import level2_rows
from arx.core.loop.engine import Engine
from arx.core.loop.trace import read_trace
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.gittext import CommitRecord
from arx.core.repo.workspace import open_run

cli.add_command(report)
cli.add_command(ablate)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def toy_run(root, name, group, iterations):
    ws = open_run(root, {"iterations": iterations, "group": group, "k": 5}, name=name)
    try:
        Engine(ws, OptunaProposer(seed=2)).run()
    finally:
        ws.close(remove_worktree=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One toy repo with a finished group-B run (15 iterations) and a group-A run (8)."""
    from support.repos import make_toy_repo

    root = make_toy_repo(tmp_path_factory.mktemp("report") / "project")
    toy_run(root, "b", "B", 15)
    toy_run(root, "a", "A", 8)
    return root


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    return image


def test_report_of_one_run_draws_both_panels_and_lists_kept_changes(runs, tmp_path):
    out = tmp_path / "b.png"
    result = invoke("-C", str(runs), "report", "b", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "b.png" in result.output and "b.md" in result.output
    check_png(out)

    rep = write_report(runs, ["b"], tmp_path / "again.png")
    # metric panel (with its steps/s twin) + parameter panel
    assert len(rep.figure.axes) == 3 and rep.axes["b:metric"].get_ylabel() == "val_bpb"
    trace = read_trace(GitRepo(runs), "b")
    kept = [r for r in trace if r["status"] == "keep"]
    assert kept
    summary = (tmp_path / "b.md").read_text()
    assert "![arx report figure](b.png)" in summary
    for rec in kept:
        assert rec["hypothesis"] in summary
    # Level 1.5 ran after iterations 5 and 10: one vertical line each, listed in the summary
    assert [(m.level, m.iteration) for m in rep.markers] == [("1.5", 5), ("1.5", 10)]
    metric_ax = rep.axes["b:metric"]
    assert len(metric_ax.lines) == 1 + len(rep.markers)  # the staircase + one line per marker
    assert "### Level 1.5 decisions" in summary and "| 10 | 2 |" in summary
    best = [r for r in trace if r["status"] in ("baseline", "keep")][-1]["metric"]
    assert f"{best:.6f}" in summary


def test_report_of_several_runs_overlays_one_line_each(runs, tmp_path):
    rep = write_report(runs, [], tmp_path / "all.png")  # default: every run
    assert [r.name for r in rep.runs] == ["a", "b"]
    assert len(rep.figure.axes) == 1 + 2 * 3  # overlay, then per run: metric + twin, params
    assert len(rep.axes["overlay"].lines) == 2
    check_png(tmp_path / "all.png")
    text = (tmp_path / "all.md").read_text()
    assert "## a (group A)" in text and "## b (group B)" in text


def test_report_html_embeds_the_figure(runs, tmp_path):
    out = tmp_path / "r.html"
    result = invoke("-C", str(runs), "report", "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64,iVBORw0KGgo" in page
    assert "<table>" in page and not (tmp_path / "r.md").exists()


def test_report_refuses_an_unknown_format_and_an_empty_repo(runs, tmp_path):
    result = invoke("-C", str(runs), "report", "--out", str(tmp_path / "r.gif"))
    assert result.exit_code != 0 and ".png" in result.output
    from support.repos import make_toy_repo

    empty = make_toy_repo(tmp_path / "empty")
    result = invoke("-C", str(empty), "report")
    assert result.exit_code != 0 and "no runs" in result.output


def test_level2_events_and_commits_become_markers(toy_repo, tmp_path):
    """Hand-written Level-2 trace events (pass, gate failure, runtime revert; in the brief's
    form and in the engine's ``verdict`` form) and a mechanism known only from its commit and
    its revert commit (gate failure)."""
    runs = toy_repo
    toy_run(runs, "b", "B", 12)
    repo = GitRepo(runs)
    tree = repo.add_worktree(tmp_path / "wt", "arx/b")
    try:
        trace = tree.root / "runs/b/trace.jsonl"
        events = [
            {"mechanism": "TabuList", "gate": "pass", "reverted": False, "iteration": 10},
            {"mechanism": "GPRegressor", "gate": "fail: import sklearn not allowed",
             "reverted": True, "iteration": 10},
            {"mechanism": "Orthogonal", "verdict": "pass", "gate": {"ok": True},
             "iteration": 11, "domain": "design of experiments", "source": "catalog",
             "reason": ""},
            {"mechanism": "TabuList", "gate": "pass", "reverted": True, "iteration": 12,
             "reason": "filter_candidates raised"},
        ]
        with open(trace, "a") as fh:
            for e in events:
                fh.write(json.dumps({"v": 1, "event": "level2", "run": "b", **e}) + "\n")
        tree.commit(["runs/b/trace.jsonl"], "test: level2 notes", "", {"Arx-Run": "b"})
        (tree.root / "runner" / "extra.py").write_text("X = 1\n")
        sha = tree.commit(["runner/extra.py"], "L2 mechanism Bandit", "",
                          {"Arx-Run": "b", "Arx-Level": "2", "Arx-Mechanism": "Bandit",
                           "Arx-Gate": "fail: smoke test failed", "Arx-Iteration": "5"})
        tree.revert(sha, "Revert L2 mechanism Bandit: gate failed", body="smoke test failed",
                    trailers={"Arx-Level": "2", "Arx-Mechanism": "Bandit",
                              "Arx-Gate": "fail: smoke test failed"})
    finally:
        repo.remove_worktree(tmp_path / "wt")
    run = load_run(repo, "b")
    rep = write_report(runs, ["b"], tmp_path / "l2.png")
    l2 = [(m.iteration, m.action, m.label) for m in rep.markers if m.level == "2"]
    assert l2 == [(5, "refuse", "L2 refuse Bandit"), (10, "activate", "L2 activate TabuList"),
                  (10, "refuse", "L2 refuse GPRegressor"),
                  (11, "activate", "L2 activate Orthogonal"), (12, "revert", "L2 revert TabuList")]
    assert len(rep.axes["b:metric"].lines) == 1 + len(rep.markers)
    colours = {line.get_color() for line in rep.axes["b:metric"].lines[1:]}
    assert len(colours) >= 4  # freeze/guidance, activate, refuse, revert are told apart
    summary = (tmp_path / "l2.md").read_text()
    assert "### Level 2 mechanisms" in summary
    assert "| 10 | GPRegressor | - | - | fail: import sklearn not allowed | refused |" in summary
    assert "| 5 | Bandit | - | commit | fail: smoke test failed | refused |" in summary
    assert "| 11 | Orthogonal | design of experiments | catalog | pass | active |" in summary
    assert len(run.commits) > 2


def test_ablate_command_wiring(toy_repo, tmp_path):
    out = tmp_path / "tiny"
    result = invoke("-C", str(toy_repo), "ablate", "--groups", "A", "--repeats", "1",
                    "--iterations", "2", "--name", "w", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "| Group | R1 | Mean ± Std |" in result.output
    assert out.with_suffix(".csv").exists() and out.with_suffix(".png").exists()
    bad = invoke("-C", str(toy_repo), "ablate", "--groups", "A,E", "--name", "w")
    assert bad.exit_code != 0 and "unknown group 'E'" in bad.output


def test_failures_and_invalid_proposals_are_marked_along_the_top():
    def rec(i, status, metric=None, changes=None, **kw):
        return {"event": "trial", "iteration": i, "kind": "baseline" if i == 0 else "trial",
                "status": status, "metric": metric, "changes": changes or {}, **kw}

    run = RunData("h", metric="loss", direction="max", group="B", iterations=6, records=(
        rec(0, "baseline", 1.0), rec(1, "discard", 0.8, {"LR": 1}),
        rec(2, "keep", 1.2, {"LR": 2}), rec(3, "crash", changes={"DEPTH": 9}),
        rec(4, "invalid_proposal", proposal={"NOPE": 1}), rec(5, "timeout", changes={"LR": 3}),
        rec(6, "interrupted", changes={"LR": 4})),
        events=({"event": "level15", "iteration": 3, "cycle": 1, "freeze": ["DEPTH"],
                 "unfreeze": [], "frozen": ["DEPTH"]},))
    fig, drawn, axes = build_figure([run])
    top = {c.get_label(): c for c in axes["h:metric"].collections}
    assert [x for x, _ in top["crash/failure"].get_offsets()] == [3, 5]
    assert [x for x, _ in top["invalid proposal"].get_offsets()] == [4]
    assert [y for _, y in top["crash/failure"].get_offsets()] == [0.95, 0.95]  # axes fraction
    assert [t.get_text() for t in axes["h:params"].get_yticklabels()] == ["LR", "DEPTH", "NOPE"]
    assert run.running_best() == ([0, 1, 2, 3, 4, 5], [1.0, 1.0, 1.2, 1.2, 1.2, 1.2])
    assert [m.action for m in drawn] == ["freeze"]
    assert len(axes["h:params"].patches) == 1  # DEPTH's frozen span


def test_outer_loop_markers_from_commits_alone():
    """A branch whose trace lacks the notes still shows its Level 1.5 and 2 commits."""
    commits = (
        CommitRecord("s1", "L1.5 cycle 1: freeze LR", "", {
            "Arx-Run": "x", "Arx-Level": "1.5", "Arx-Cycle": "1", "Arx-Iteration": "5",
            "Arx-Freeze": "LR", "Arx-Unfreeze": "-"}),
        CommitRecord("s2", "L2 mechanism Tabu", "", {
            "Arx-Run": "x", "Arx-Level": "2", "Arx-Mechanism": "Tabu", "Arx-Gate": "pass",
            "Arx-Iteration": "10"}),
        CommitRecord("s3", "L1 #12 keep", "", {"Arx-Run": "x", "Arx-Level": "1",
                                                "Arx-Iteration": "12"}),
        CommitRecord("s4", "Revert L2 mechanism Tabu: observe failed at run time", "boom", {
            "Arx-Run": "x", "Arx-Reverts": "s2", "Arx-Level": "2", "Arx-Mechanism": "Tabu",
            "Arx-Gate": "runtime: ValueError"}),
    )
    run = RunData("x", commits=commits)
    assert [(m.iteration, m.level, m.action) for m in markers(run)] == [
        (5, "1.5", "freeze"), (10, "2", "activate"), (12, "2", "revert")]
    assert [r["result"] for r in level2_rows(run)] == ["active", "reverted"]
