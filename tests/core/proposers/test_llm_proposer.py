"""The LLM proposer end to end: real openai client, real HTTP, scripted answers."""

import json

import pytest

from arx.core.errors import LLMError
from arx.core.llm.client import ChatClient
from arx.core.llm.settings import LLMSettings
from arx.core.proposers.base import ProposalRequest
from arx.core.proposers.llm import DEFAULT_SYSTEM, LLMProposer

from support.llm_server import ok

PROMPT = "Current val_bpb 1.10. Active: LR, BATCH, BETAS, COMPILE. Propose one change."


def request(**kw) -> ProposalRequest:
    base = {"iteration": 3, "prompt": PROMPT, "active": ("LR", "BATCH", "BETAS", "COMPILE"),
            "best_config": {"LR": 0.02, "BATCH": 2**17, "BETAS": (0.8, 0.95),
                            "COMPILE": False, "DEPTH": 8},
            "space": None}
    return ProposalRequest(**{**base, **kw})


@pytest.fixture
def proposer(llm_server, tmp_path):
    settings = LLMSettings(provider="local", base_url=llm_server.base_url, model="m",
                           api_key_env=("ARX_API_KEY",), max_retries=1, price_in=1,
                           price_out=1)
    client = ChatClient(settings, tmp_path / "runs" / "r" / "llm", rel_root=tmp_path,
                        sleep=lambda s: None, env={})
    return LLMProposer(client)


def test_clean_json(llm_server, proposer, tmp_path):
    llm_server.script([ok('{"changes": {"LR": 0.01}, "hypothesis": "lower LR, less noise"}',
                          prompt_tokens=300, completion_tokens=20)])
    (p,) = proposer.propose(request())
    assert dict(p.changes) == {"LR": 0.01} and p.hypothesis == "lower LR, less noise"
    assert p.source == "llm" and p.raw is None
    assert p.usage == {"prompt_tokens": 300, "completion_tokens": 20, "cost_usd": 0.00032}
    assert p.transcripts == ("runs/r/llm/0001-propose.json",)
    body = llm_server.chat_requests[0]["body"]
    assert body["messages"] == [{"role": "system", "content": DEFAULT_SYSTEM},
                                {"role": "user", "content": PROMPT}]
    assert body["response_format"] == {"type": "json_object"}
    parsed = json.loads((tmp_path / p.transcripts[0]).read_text())["parsed"]
    assert parsed == {"proposals": [{"changes": {"LR": 0.01},
                                     "hypothesis": "lower LR, less noise"}]}


@pytest.mark.parametrize(("answer", "changes"), [
    ('Sure. I think {"changes": {"LR": 0.01}, "hypothesis": "h"} should help.', {"LR": 0.01}),
    ('Reasoning...\n```json\n{"changes": {"BATCH": 262144}, "hypothesis": "h"}\n```',
     {"BATCH": 262144}),
    ("{'changes': {'BATCH': 2**18, 'BETAS': (0.9, 0.95), 'COMPILE': True}, 'hypothesis': 'h'}",
     {"BATCH": 262144, "BETAS": (0.9, 0.95), "COMPILE": True}),
    ('{"LR": 0.005, "hypothesis": "h"}', {"LR": 0.005}),  # a bare mapping of known names
])
def test_lenient_answers(llm_server, proposer, answer, changes):
    llm_server.script([answer])
    (p,) = proposer.propose(request())
    assert dict(p.changes) == changes and p.hypothesis == "h"


@pytest.mark.parametrize("answer", [
    "I would lower the learning rate a bit.",
    '{"UNKNOWN_THING": 1}',
    '{"changes": [1, 2]}',
])
def test_unusable_answer_is_an_empty_proposal_with_raw_text(llm_server, proposer, tmp_path,
                                                            answer):
    llm_server.script([answer])
    (p,) = proposer.propose(request())
    assert dict(p.changes) == {} and p.hypothesis == "" and p.raw == answer
    assert p.usage["prompt_tokens"] == 100 and p.transcripts
    parsed = json.loads((tmp_path / p.transcripts[0]).read_text())["parsed"]
    assert "error" in parsed


def test_reask_carries_the_previous_answer_and_the_feedback(llm_server, proposer, tmp_path):
    llm_server.script(["lower the LR", '{"changes": {"LR": 0.01}, "hypothesis": "h"}'])
    (first,) = proposer.propose(request())
    assert first.changes == {}
    feedback = "Your proposal was refused (empty): no changes"
    (second,) = proposer.propose(request(), feedback=feedback)
    assert dict(second.changes) == {"LR": 0.01}
    msgs = llm_server.chat_requests[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "lower the LR"
    assert feedback in msgs[3]["content"] and "could not be read" in msgs[3]["content"]
    assert second.transcripts == ("runs/r/llm/0002-reask.json",)


def test_reask_without_a_known_previous_answer_appends_the_feedback(llm_server, proposer):
    llm_server.script(['{"changes": {"LR": 0.01}}'])
    proposer.propose(request(iteration=9), feedback="LR must be > 0")
    msgs = llm_server.chat_requests[0]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"].startswith(PROMPT) and "LR must be > 0" in msgs[1]["content"]


def test_several_candidates(llm_server, proposer):
    llm_server.script(['{"candidates": [{"changes": {"LR": 0.01}, "hypothesis": "a"},'
                       ' {"changes": {"BATCH": 65536}, "hypothesis": "b"},'
                       ' {"changes": {"LR": 0.03}, "hypothesis": "c"}]}'])
    proposals = proposer.propose(request(n=2))
    assert [dict(p.changes) for p in proposals] == [{"LR": 0.01}, {"BATCH": 65536}]
    assert proposals[0].usage and not proposals[1].usage  # the engine sums usage
    assert "2 different candidates" in llm_server.chat_requests[0]["body"]["messages"][1][
        "content"]


def test_the_runner_system_prompt_wins(llm_server, proposer):
    llm_server.script(['{"changes": {"LR": 0.01}}'])
    proposer.propose(request(system="Be bold. Reply in JSON."))
    assert llm_server.chat_requests[0]["body"]["messages"][0]["content"] == (
        "Be bold. Reply in JSON.")


def test_a_dead_endpoint_raises_llm_error(llm_server, proposer):
    llm_server.stop()
    with pytest.raises(LLMError, match=llm_server.base_url):
        proposer.propose(request())
