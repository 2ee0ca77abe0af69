"""Level 1.5 sees loops (rules >= 7, issue #26): a parameter proposed again and again without
gain (its moves re-ran measured configurations) is evidence, so an LLM's freeze of it is
honoured with the repeats named, and the rules freeze it too. Rules <= 6 refuse it, as before."""

from __future__ import annotations

from arx.core.levels.level15 import (
    LOOP_WINDOW,
    SearchState,
    evidence_lines,
    from_llm,
    llm_messages,
    looping,
    rules,
)

ACTIVE = ["LR", "BIAS", "DEPTH", "WD"]
BASE = {"LR": 0.01, "BIAS": True, "DEPTH": 4, "WD": 0.1}


def trial(i, changes, delta, status="discard"):
    return {"iteration": i, "kind": "trial", "changes": changes, "status": status,
            "delta": delta, "metric": 1.0 + delta, "config": {**BASE, **changes}}


def stuck():
    """The paper's regime: the proposer keeps asking for LR = 0.1 (a big loss every time: a
    large effect, so the rules by evidence never called it inert); BIAS barely matters."""
    recs = [{"iteration": 0, "kind": "baseline", "status": "baseline", "metric": 1.0,
             "changes": {}, "config": dict(BASE)}]
    recs += [trial(1, {"BIAS": False}, 0.003), trial(2, {"DEPTH": 2}, -0.3, "keep"),
             trial(3, {"BIAS": False}, 0.002), trial(4, {"WD": 0.2}, 0.05),
             trial(5, {"BIAS": False}, 0.004), trial(6, {"WD": 0.05}, 0.04)]
    recs[2]["config"] = {**BASE, "DEPTH": 2}  # the keep moved the best: later trials start there
    for rec in recs[3:]:
        rec["config"] = {**rec["config"], "DEPTH": 2}
    recs += [trial(i, {"LR": 0.1}, 0.9) for i in range(7, 12)]  # one LR move, 5 times
    for rec in recs[7:]:
        rec["config"] = {**rec["config"], "DEPTH": 2}
    return recs


def test_a_parameter_repeated_without_gain_is_looping():
    recs = stuck()
    assert looping(recs, SearchState(), ACTIVE, k=3) == {"LR": 4}  # the first LR trial is new
    assert looping(recs, SearchState(), ACTIVE, k=5) == {}  # 4 repeats: below k = 5
    released = SearchState(released={"LR": 9})  # unfrozen at 9: only 10 and 11 count
    assert looping(recs, released, ACTIVE, k=3) == {}
    late = recs + [trial(i, {"WD": 0.3 + i}, 0.01) for i in range(12, 12 + LOOP_WINDOW)]
    assert looping(late, SearchState(), ACTIVE, k=3) == {}  # out of the last window
    kept = recs + [trial(12, {"LR": 0.02}, -0.1, "keep")]
    assert looping(kept, SearchState(), ACTIVE, k=3) == {}  # a keep: not for nothing


def test_the_llm_freeze_of_a_looping_parameter_is_honoured_under_rules_7_only():
    recs = stuck()
    text = '{"freeze": ["LR"], "unfreeze": [], "guidance": "Leave LR alone."}'
    old = from_llm(text, recs, SearchState(), ACTIVE, 2, "min", k=3, min_active=2,
                   evidence=True)
    assert old.freeze == () and "LR" in old.note  # rules <= 6: its effect says it matters
    new = from_llm(text, recs, SearchState(), ACTIVE, 2, "min", k=3, min_active=2,
                   evidence=True, loops=True)
    assert new.freeze == ("LR",) and new.note == ""
    (line,) = evidence_lines(recs, SearchState(), new, 2, "min", True, loops=True, k=3)
    assert line == ("freeze LR: proposed again and again without gain: 4 trials changing it "
                    f"ran a configuration already measured in the last {LOOP_WINDOW} "
                    "iterations, none kept")
    prompt = llm_messages(recs, SearchState(), ACTIVE, "min", "loss", evidence=True,
                          loops=True, k=3)[1]["content"]
    assert "Proposed again and again without gain (trials that re-ran a measured " \
           "configuration): LR (4)" in prompt


def test_the_rules_freeze_the_looping_parameter_first():
    recs = stuck()
    old = rules(recs, SearchState(), ACTIVE, 2, "min", k=3, evidence=True)
    assert "LR" not in old.freeze
    new = rules(recs, SearchState(), ACTIVE, 2, "min", k=3, evidence=True, loops=True)
    assert "LR" in new.freeze
    two_left = rules(recs, SearchState(), ACTIVE[:3], 2, "min", k=3, min_active=2,
                     evidence=True, loops=True)
    assert two_left.freeze == ("LR",)  # room for one: the one wasting trials
