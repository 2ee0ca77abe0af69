"""The outcome gate (issue #16): a Level-2 mechanism that does no better than the search did
before it is reverted for "no measured benefit"; one that helps is kept; both are in git log,
`arx log --level 2`, `arx mechanism list`, the report and the trace, and replay judges the same."""

from __future__ import annotations

import json
import shutil

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.analysis.figures import markers
from arx.core.analysis.report import load_run
from arx.core.analysis.summary import level2_rows, run_blocks
from arx.core.levels.mechanism_state import (
    MechanismRecord,
    events_from_commits,
    mechanism_records,
)
from arx.core.levels.outcome import calls_for_level2, due, judge, repeated, window
from arx.core.loop.engine import Engine
from arx.core.loop.trace import trace_events
from arx.core.proposers.offline import offline_proposer
from arx.core.replay.run import compared_kinds
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run
from arx.core.states import MechanismState

from support.repos import make_toy_repo


def rec(i, status="discard", metric=1.0, best=1.0, config=None, changes=None):
    return {"iteration": i, "kind": "trial", "status": status, "metric": metric,
            "best_before": best, "changes": changes or {"LR": i},
            "config": config or {"LR": i}}


def mech(iteration=4, source="catalog", commit="abc"):
    return MechanismRecord("M", MechanismState.ACTIVE, source, "d", 1, iteration, commit, {})


def test_windows_count_gain_repeats_and_invalid_proposals():
    recs = [{"iteration": 0, "kind": "baseline", "status": "baseline", "metric": 1.0,
             "changes": {}, "config": {"LR": 0}},
            rec(1, "keep", 0.9, 1.0), rec(2), rec(3, config={"LR": 1}),  # 3 repeats 1
            rec(4, "invalid_proposal", None, None), rec(5, config={"LR": 0})]  # 5: the baseline
    assert [r["iteration"] for r in repeated(recs)] == [3, 5]
    w = window(recs, 1, 5, "min")
    assert (w.trials, w.repeats, w.invalid) == (5, 2, 1)
    assert w.gain == pytest.approx(0.1) and w.gain_per_trial == pytest.approx(0.02)
    assert window(recs, 1, 5, "max").gain == 0.0  # 0.9 after 1.0 is no gain when higher wins


def test_a_mechanism_helps_with_more_gain_or_as_much_with_less_waste():
    before = [rec(i, "keep", 1.0 - 0.01 * i, 1.01 - 0.01 * i) for i in (1, 2, 3, 4)]
    better = before + [rec(i, "keep", 0.5 - 0.1 * i, 0.6 - 0.1 * i) for i in (5, 6, 7, 8)]
    worse = before + [rec(i) for i in (5, 6, 7, 8)]
    assert judge(mech(), better, 4, "min").helps
    j = judge(mech(), worse, 4, "min")
    assert not j.helps and j.reason.startswith("no measured benefit: gain/trial 0.01 -> 0")
    assert (j.before.first, j.before.last, j.after.first, j.after.last) == (1, 4, 5, 8)
    flat = [rec(i, config={"LR": 1}) for i in range(1, 5)] + [rec(i) for i in (5, 6, 7, 8)]
    assert judge(mech(), flat, 4, "min").helps  # no gain either side, fewer repeats after


def test_due_judges_level2_mechanisms_once_after_their_window():
    m, hand = mech(10), mech(10, source="manual", commit="def")
    assert due([m, hand], [], done=19, judge_window=10) == []
    assert due([m, hand], [], done=20, judge_window=10) == [m]
    judged = [{"event": "level2", "verdict": "kept", "commit": "abc"}]
    assert due([m], judged, done=40, judge_window=10) == []
    assert due([m], [], done=40, judge_window=0) == []  # judge_window = 0: off


def test_level2_is_called_for_only_by_a_window_that_stalled_or_wasted():
    gained = [rec(1), rec(2, "keep", metric=0.9, best=1.0), rec(3)]
    assert not calls_for_level2(gained, 3, 3, "min").stalled
    assert calls_for_level2([rec(1), rec(2), rec(3)], 3, 3, "min").stalled  # no gain
    # a gain, but a configuration run twice: trials wasted
    wasted = [*gained[:2], rec(3, config={"LR": 1}, changes={"LR": 1})]
    assert calls_for_level2(wasted, 3, 3, "min").stalled
    # only the window before the cycle counts: a keep before it, or after it (a resume that
    # looks again later), does not
    late = [rec(1, "keep", metric=0.5, best=1.0), rec(2), rec(3), rec(4),
            rec(5, "keep", metric=0.4, best=0.5)]
    assert calls_for_level2(late, 4, 3, "min").stalled
    assert not calls_for_level2(late, 5, 3, "min").stalled


def test_level2_steps_aside_only_from_rules_4_and_step_aside_false_restores_the_cadence(
        toy_repo, monkeypatch):
    """Seed 2 on the toy target gains in every 5-iteration window: from rules 4 Level 2 adds
    nothing; with ``step_aside = false``, and on a run made with rules 3 (its branch resumes
    and replays as it ran), a mechanism every cycle as in the paper."""
    # 6 iterations: the first Level-2 cycle runs after iteration 5
    flags = {"iterations": 6, "group": "D", "k": 5, "m": 1, "judge_window": 5, "seed": 2}
    assert level2_notes(open_run(toy_repo, flags, name="aside")) == []
    # each step-aside is a trace event with its window, in `arx log --level 2`, and replayed
    (aside,) = [e for e in trace_events(GitRepo(toy_repo), "aside")
                if e.get("event") == "step_aside"]
    assert (aside["cycle"], aside["iteration"]) == (1, 5)
    assert (aside["window"]["first"], aside["window"]["last"]) == (1, 5)
    assert aside["reason"].startswith("the search is progressing (iterations 1-5: 5 trials")
    log = json.loads(invoke(toy_repo, "log", "aside", "--level", "2", "--json").output)
    assert log == [{"sha": None, "subject": f"L2 cycle 1: steps aside, {aside['reason']}",
                    "Arx-Run": "aside", "Arx-Level": "2", "Arx-Cycle": "1",
                    "Arx-Iteration": "5", "event": "step_aside"}]
    table = invoke(toy_repo, "log", "aside").output
    assert "(event)" in table and "steps aside" in table
    assert table.index("L1.5 cycle 1") < table.index("steps aside")
    blocks = run_blocks(load_run(GitRepo(toy_repo), "aside"))
    assert any(b[0] == "p" and b[1].startswith("Level 2 stepped aside") and
               f"after iteration 5: L2 cycle 1: steps aside, {aside['reason']}" in b[1]
               for b in blocks)
    replayed = json.loads(invoke(toy_repo, "replay", "arx/aside", "--json").output)
    assert replayed["result"] == "reproduced", replayed["first_divergence"]
    assert "step_aside" in compared_kinds(trace_events(GitRepo(toy_repo), "aside"))
    cadence = level2_notes(open_run(toy_repo, {**flags, "step_aside": False}, name="paper"))
    monkeypatch.setattr("arx.core.config.CURRENT_RULES", 3)
    ws = open_run(toy_repo, flags, name="rules3")
    assert ws.config.rules == 3
    old = level2_notes(ws)
    for notes in (cadence, old):
        assert [(n["cycle"], n["verdict"]) for n in notes][:1] == [(1, "pass")]


@pytest.fixture(scope="module")
def group_d(tmp_path_factory):
    """A group D run on the toy target: a catalog mechanism every 5 iterations, each judged
    after 5 more (seed 1: one kept, two reverted for no measured benefit)."""
    root = make_toy_repo(tmp_path_factory.mktemp("outcome") / "project")
    ws = open_run(root, {"iterations": 24, "group": "D", "k": 5, "m": 1, "judge_window": 5,
                         "seed": 1, "step_aside": False}, name="d")
    return root, level2_notes(ws)


def level2_notes(ws):
    """Run ``ws`` to its end offline; its ``level2`` notes."""
    try:
        engine = Engine(ws, offline_proposer(ws.config))
        engine.run()
        return engine.trace.notes("level2")
    finally:
        ws.close(remove_worktree=True)


def invoke(root, *args):
    return CliRunner().invoke(cli, ["-C", str(root), *args], catch_exceptions=False)


def test_group_d_keeps_one_mechanism_and_reverts_one_for_no_measured_benefit(group_d):
    root, notes = group_d
    log = list(reversed(GitRepo(root).log("arx/d")))
    subjects = [c.subject for c in log]
    kept = [c for c in log if c.trailers.get("Arx-Outcome", "").startswith("kept: ")]
    reverted = [c for c in log if c.trailers.get("Arx-Outcome", "").startswith("no_benefit: ")]
    assert kept and reverted
    for c in kept:
        assert c.subject == f"L2 mechanism {c.trailers['Arx-Mechanism']} kept: measured benefit"
        assert "Before: iterations" in c.body and c.trailers["Arx-Level"] == "2"
    for c in reverted:
        name = c.trailers["Arx-Mechanism"]
        assert c.subject == f"Revert L2 mechanism {name}: no measured benefit"
        undone = next(x for x in log if x.sha == c.trailers["Arx-Reverts"])
        assert undone.subject.startswith(f"L2 mechanism {name} (")
        assert subjects.index(undone.subject) < subjects.index(c.subject)
    # the runner on the branch holds the kept mechanisms and not the reverted ones
    runner = git.Repo(root).git.show("arx/d:runner/runner.py")
    assert all(f"class {c.trailers['Arx-Mechanism']}" in runner for c in kept)
    assert all(f"class {c.trailers['Arx-Mechanism']}" not in runner for c in reverted)
    # the trace: one judgement per mechanism, each after its window, with both windows
    judged = [n for n in notes if n["verdict"] in ("kept", "no_benefit")]
    activated = {n["mechanism"]: n for n in notes if n["verdict"] == "pass"}
    assert sorted(n["mechanism"] for n in judged) == sorted(activated)
    for n in judged:
        assert n["iteration"] == activated[n["mechanism"]]["iteration"] + 5
        assert n["window"] == 5 and n["after"]["trials"] == 5
        assert n["reverted"] == (n["verdict"] == "no_benefit")
        assert n["reason"].startswith("no measured benefit" if n["reverted"]
                                      else "measured benefit")
    states = {m.name: m.state for m in mechanism_records(notes)}
    assert {states[c.trailers["Arx-Mechanism"]] for c in kept} == {MechanismState.ACTIVE}
    assert {states[c.trailers["Arx-Mechanism"]] for c in reverted} == {MechanismState.REVERTED}
    # read from the commits alone (a trace without the events), the same states
    from_commits = {m.name: m.state for m in mechanism_records(events_from_commits(log))}
    assert from_commits == states


def test_the_judgements_show_in_log_mechanism_list_and_report(group_d):
    root, notes = group_d
    out = invoke(root, "log", "d", "--level", "2", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert any(r["subject"].endswith(": no measured benefit") for r in rows)
    assert any(r["subject"].endswith("kept: measured benefit") for r in rows)
    out = invoke(root, "mechanism", "list", "--run", "d", "--json")
    listed = json.loads(out.output)
    assert {(r["verdict"], r["state"]) for r in listed} >= {("no_benefit", "reverted"),
                                                            ("kept", "active")}
    # the table shows each outcome's whole reason (it was cut at 60 characters, before the
    # waste and the windows compared), wrapped by words
    table = " ".join(invoke(root, "mechanism", "list", "--run", "d").output.split())
    for r in listed:
        if r["verdict"] in ("kept", "no_benefit"):
            tail = r["reason"].split("waste/trial ")[1]  # "0.00 -> 0.00 (iterations 5-9 -> 10-14)"
            assert all(word in table for word in tail.split())
    rows = level2_rows(load_run(GitRepo(root), "d"))
    judged = {r["verdict"]: r for r in rows if r["verdict"] in ("kept", "no_benefit")}
    assert judged["no_benefit"]["result"] == "reverted"
    assert judged["no_benefit"]["gate"].startswith("pass (reverted: no measured benefit")
    assert judged["kept"]["result"] == "active" and judged["kept"]["now"] == "active"
    drawn = markers(load_run(GitRepo(root), "d"))  # the report figure's markers
    assert any(m.action == "keep" for m in drawn)
    assert any(m.action == "revert" and m.label.endswith("(no benefit)") for m in drawn)


def test_replay_judges_as_the_run_did(group_d, tmp_path):
    root, _ = group_d
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    out = invoke(copy, "replay", "arx/d", "--json")
    assert out.exit_code == 0, out.output


class Killed(BaseException):
    """arx stopped right after the outcome gate's revert, before its trace event."""


def test_a_kill_between_the_revert_and_its_event_is_recorded_on_resume(toy_repo, monkeypatch):
    from arx.core.loop.trace import Trace

    real_note = Trace.note

    def note(self, event, data):
        if data.get("verdict") == "no_benefit":
            raise Killed()
        return real_note(self, event, data)

    monkeypatch.setattr(Trace, "note", note)
    flags = {"iterations": 24, "group": "D", "k": 5, "m": 1, "judge_window": 5, "seed": 1,
             "step_aside": False}
    ws = open_run(toy_repo, flags, name="k")
    try:
        with pytest.raises(Killed):
            Engine(ws, offline_proposer(ws.config)).run()
    finally:
        ws.close(remove_worktree=False)
    head = GitRepo(toy_repo).log("arx/k", max_count=1)[0]
    assert head.subject.startswith("Revert L2 mechanism ")
    assert head.subject.endswith(": no measured benefit")
    monkeypatch.setattr(Trace, "note", real_note)
    notes = level2_notes(open_run(toy_repo, {"iterations": 24}, resume="k"))
    judged = [n for n in notes if n["verdict"] == "no_benefit"]
    assert len(judged) == 1 and judged[0]["revert"] == head.sha
    assert judged[0]["reason"].startswith("no measured benefit: gain/trial")
    reverts = [c for c in GitRepo(toy_repo).log("arx/k") if c.subject.startswith("Revert")]
    assert len(reverts) == 1  # not reverted twice


def _stuck_then_tabu():
    """Iterations 1-10: the search's easy early gains and 6 repeats of a measured configuration;
    11-20, under a tabu active from iteration 11: no repeat, and smaller gains."""
    early = [rec(i, "keep", 1.0 - 0.05 * i, 1.05 - 0.05 * i, config={"LR": i}) for i in (1, 2, 3)]
    early += [rec(i, config={"LR": 1}, changes={"LR": 1}) for i in range(4, 10)]  # 6 repeats
    early += [rec(10)]
    later = [rec(11, "keep", 0.84, 0.85)] + [rec(i) for i in range(12, 21)]
    return early + later


def test_rules_7_keep_a_tabu_that_cut_repeats_though_the_early_window_gained_more():
    recs = _stuck_then_tabu()
    before, after = window(recs, 1, 10, "min"), window(recs, 11, 20, "min")
    assert (before.repeats, after.repeats) == (6, 0)
    assert after.gain_per_trial < before.gain_per_trial  # the confound: the search's age
    tabu = mech(iteration=10)
    old = judge(tabu, recs, 10, "min", rules=6)
    assert not old.helps and old.verdict.value == "no_benefit"  # rules <= 6: unchanged
    assert old.evidence == ("gain/trial 0.015 -> 0.001, waste/trial 0.60 -> 0.00 "
                            "(iterations 1-10 -> 11-20)")
    new = judge(tabu, recs, 10, "min", rules=7)
    assert new.helps and new.verdict.value == "kept"
    assert new.reason.startswith("measured benefit (waste avoided): gain/trial 0.015 -> 0.001, "
                                 "waste/trial 0.60 -> 0.00, repeats 6/10 -> 0/10")


def test_rules_7_still_revert_a_mechanism_that_changed_nothing_or_only_lost_gain():
    gained = [rec(i, "keep", 1.0 - 0.01 * i, 1.01 - 0.01 * i) for i in range(1, 6)]
    same_waste = [rec(i, config={"LR": 1}, changes={"LR": 1}) for i in range(1, 6)] + \
        [rec(i, config={"LR": 1}, changes={"LR": 1}) for i in range(6, 11)]
    assert not judge(mech(5), gained + [rec(i) for i in range(6, 11)], 5, "min", 7).helps
    j = judge(mech(5), same_waste, 5, "min", 7)  # repeats 4/5 -> 5/5: it fixed nothing
    assert not j.helps and not j.avoided_waste
    more = gained + [rec(i, "keep", 0.5 - 0.1 * i, 0.6 - 0.1 * i) for i in range(6, 11)]
    assert judge(mech(5), more, 5, "min", 7).helps  # more gain, no more waste
    wasteful = gained + [rec(6, "keep", 0.0, 0.95)] + \
        [rec(i, config={"LR": 6}, changes={"LR": 6}) for i in range(7, 11)]
    assert not judge(mech(5), wasteful, 5, "min", 7).helps  # its gain came with repeats
