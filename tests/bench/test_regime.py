"""The simulated LLM of the paper's regime (bench/regime_llm.py): the prompt wording it reads is
still arx's, its answers are a function of the seed and the prompt, a short group-C run against
it over HTTP installs its first mechanism through the real validation gate, and its second
passes that gate beside the first."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from arx.cli.common import make_proposer
from arx.core.levels import level15
from arx.core.levels.gate import run_gate
from arx.core.levels.level2 import GENERATE_FORMAT
from arx.core.levels.level2 import SYSTEM as LEVEL2_SYSTEM
from arx.core.levels.mechanism import Mechanism, apply_patches
from arx.core.loop.driver import run_to_end
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import regime  # noqa: E402
import regime_llm  # noqa: E402
import regime_mechanisms  # noqa: E402

ROOT = Path(__file__).parents[2]

PROMPT = """You are tuning the training script `train.py`; the metric is val_bpb (lower is better).

Parameters you may change (current best value, allowed values):
- LR = 0.005   [LR float in [0.0001, 0.1] log]
- DEPTH = 4   [DEPTH int in [1, 8]]
- ACTIVATION = 'relu'   [ACTIVATION one of 'relu', 'gelu']
Do not change (locked or frozen): WIDTH

Guidance: Prefer changes to ACTIVATION: changed least so far.

Recent trials (oldest first):
#1 LR=0.02: val_bpb=1.5 [discard] try LR=0.02
#2 LR=0.005: val_bpb=1.4 [keep] try LR=0.005
#3 DEPTH=5: val_bpb=1.6 [discard] try DEPTH=5

Avoid: LR=0.01
"""


def test_the_markers_it_reads_are_the_wording_arx_writes():
    markers = regime_llm.Markers()
    runner = (ROOT / "runner_repo" / "runner.py").read_text()
    for text in (markers.params, markers.guidance, markers.focus, markers.recent):
        assert text in runner, text
    assert markers.avoid[1] in (ROOT / "runner_repo" / "catalog" / "tabu.json").read_text()
    asked = level15.llm_messages([], level15.SearchState(), ["LR"], "min", "val_bpb")
    assert asked[-1]["content"].startswith(markers.level15)


def test_proposals_follow_the_preference_list_memory_guidance_and_avoid_lines():
    prompt = regime_llm.parse_prompt(PROMPT)
    assert set(prompt.params) == {"LR", "DEPTH", "ACTIVATION"}  # WIDTH is not offered
    assert prompt.avoid == {("LR", "0.01")} and prompt.trials[-1].changes == {"DEPTH": 5}
    greedy = regime_llm.Model(prefer=("LR+", "LR-", "DEPTH+", "ACTIVATION>"), second_choice=0.0)
    # the guidance names ACTIVATION: it goes first; without it LR+ is avoided (0.01) and
    # DEPTH+ is the last trial's change (memory), so LR- comes first; without the avoid line LR+
    assert json.loads(greedy.propose(PROMPT, 1))["changes"] == {"ACTIVATION": "gelu"}
    deaf = regime_llm.Model(prefer=greedy.prefer, second_choice=0.0, guidance=False)
    assert json.loads(deaf.propose(PROMPT, 1))["changes"] == {"LR": 0.0025}
    blind = regime_llm.Model(prefer=greedy.prefer, second_choice=0.0, guidance=False,
                             mechanisms=False)
    assert json.loads(blind.propose(PROMPT, 1))["changes"] == {"LR": 0.01}
    answer = json.loads(greedy.level15(
        "Search trace summary (val_bpb, lower is better).\n- LR: tried 5, kept 0, best delta n/a\n"
        "- DEPTH: tried 1, kept 0, best delta n/a\n- ACTIVATION: tried 0, kept 0, best delta n/a\n"
        "Recent trials: #1 {'LR': 0.02} discard; #2 {'LR': 0.005} discard; #3 {'LR': 0.02} "
        "discard; #4 {'DEPTH': 5} discard"))
    assert answer["freeze"] == ["LR"] and "ACTIVATION, DEPTH" in answer["guidance"]


def ask(url: str, text: str) -> str:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(url + "/chat/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["choices"][0]["message"]["content"]


def test_the_endpoint_answers_the_same_prompt_and_seed_alike_over_http():
    model = regime_llm.Model(prefer=("LR-", "DEPTH-", "LR+"), second_choice=0.5)
    prompts = [PROMPT.replace("#3 DEPTH=5", f"#{i} DEPTH=5") for i in range(3, 23)]
    with regime_llm.Endpoint(model) as endpoint:
        seed1 = [ask(endpoint.base_url(1), p) for p in prompts]
        assert [ask(endpoint.base_url(1), p) for p in prompts] == seed1
        seed2 = [ask(endpoint.base_url(2), p) for p in prompts]
        assert endpoint.calls == 3 * len(prompts)
    firsts = {json.dumps({"changes": {"LR": 0.0025}, "hypothesis": "try LR=0.0025"})}
    assert seed1 != seed2 and set(seed1) - firsts and set(seed1) & firsts  # the coin is seeded


def test_a_short_group_c_run_installs_the_tabu_through_the_gate(toy_repo):
    """Level 1.5 and Level 2 after iteration 1: the four rounds over HTTP, the gate, a commit."""
    with regime_llm.Endpoint(regime_llm.Model()) as endpoint:
        ws = open_run(toy_repo, {"iterations": 2, "group": "C", "k": 1, "m": 1, "seed": 1,
                                 "step_aside": False, "llm": endpoint.base_url(1),
                                 "model": regime_llm.MODEL_ID}, name="sim")
        run_to_end(ws, make_proposer(ws, quiet=True))
    facts = regime.facts(GitRepo(toy_repo), "sim", 1, None)
    assert facts.mechanisms == (("TriedValuesTabu", "not judged"),) and facts.trials == 2
    assert "class TriedValuesTabu" in GitRepo(toy_repo).show("arx/sim", "runner/runner.py")


def test_the_second_generate_answer_passes_the_real_gate_beside_the_first(tmp_path):
    """The focus, written after the tabu (named twice: its pass and its judgement): patched onto
    a runner holding the tabu, the gate passes."""
    model, tried = regime_llm.Model(), ["TriedValuesTabu"]
    messages = [{"role": "system", "content": LEVEL2_SYSTEM},
                {"role": "user", "content": "Mechanisms already tried on this run: "
                                            "TriedValuesTabu, TriedValuesTabu.\n\nEXPLORE: ..."},
                {"role": "user", "content": "GENERATE the code.\n" + GENERATE_FORMAT}]
    focus = Mechanism.from_json(json.loads(model.answer(messages, 1)))
    tabu = Mechanism.from_json(regime_mechanisms.mechanism([]))
    assert (tabu.name, focus.name) == (*tried, "LeastChangedFocus")
    runner = apply_patches(apply_patches((ROOT / "runner_repo" / "runner.py").read_text(),
                                         tabu.patches), focus.patches)
    result = run_gate(runner, tmp_path, mechanism=focus.name)
    assert result.ok, result.describe()


def test_each_mechanisms_fate_and_whether_it_cut_repeats_come_from_its_events():
    window = {"first": 1, "last": 10, "trials": 10, "gain": 0.0}
    events = [
        {"event": "level2", "mechanism": "T", "verdict": "pass"},
        {"event": "level2", "mechanism": "F", "verdict": "pass"},
        {"event": "trial", "iteration": 11},
        {"event": "level2", "mechanism": "T", "verdict": "no_benefit", "reason": "no gain",
         "before": {**window, "repeats": 5}, "after": {**window, "repeats": 2}},
    ]
    assert regime.fate(events) == [("T", "reverted: no gain"), ("F", "not judged")]
    assert regime.judged(events) == [("T", True, False)]
