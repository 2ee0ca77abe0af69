"""The LLM proposer: asks a chat model for changes to the target's constants.

One request per ``propose``: the system prompt (the runner's ``request.system``, else this
proposer's), then the runner's prompt. On a re-ask the previous answer follows as the assistant's
turn and the engine's feedback as a new user turn, so the model sees what was refused and why.
The answer is read with ``extract_json_object``; text that yields no usable ``changes`` becomes a
``Proposal`` with empty changes and the raw text, which the engine records and re-asks once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from arx.core.llm.client import ChatClient
from arx.core.llm.jsonextract import extract_json_object
from arx.core.proposers.base import Proposal, ProposalRequest, Proposer

DEFAULT_SYSTEM = """\
You are an ML researcher tuning the top-level constants of a training script to improve its \
metric. Change only the constants the request lists as active, keep each value's type, and change \
few at a time so the result can be explained.
Answer with one JSON object and nothing else:
{"changes": {"NAME": value}, "hypothesis": "one sentence: why this should help"}
When asked for several candidates, answer \
{"candidates": [{"changes": {"NAME": value}, "hypothesis": "..."}, ...]}."""

FORMAT_REMINDER = (
    'Answer again with one JSON object: {"changes": {"NAME": value}, "hypothesis": "..."}.'
)


class LLMProposer(Proposer):
    """Proposals from a ``ChatClient``; usage and transcript go on the first proposal."""

    name = "llm"

    def __init__(self, client: ChatClient, system_prompt: str | None = None):
        self.client = client
        self.system_prompt = system_prompt or DEFAULT_SYSTEM
        #: (iteration, prompt, answer, parse error) of the last request, for a re-ask
        self._last: tuple[int, str, str, str | None] | None = None

    def messages(self, request: ProposalRequest, feedback: str | None = None) -> list[dict]:
        """The chat messages for ``request`` (and a re-ask with ``feedback``)."""
        prompt = request.prompt
        if request.n > 1:
            prompt += (f"\n\nGive {request.n} different candidates as "
                       '{"candidates": [{"changes": {...}, "hypothesis": "..."}, ...]}.')
        messages = [{"role": "system", "content": request.system or self.system_prompt},
                    {"role": "user", "content": prompt}]
        if feedback is None:
            return messages
        last = self._last
        if last is not None and last[:2] == (request.iteration, request.prompt):
            note = f"\nYour answer could not be read: {last[3]}." if last[3] else ""
            messages += [{"role": "assistant", "content": last[2]},
                         {"role": "user", "content": f"{feedback}{note}\n{FORMAT_REMINDER}"}]
        else:  # the previous answer is not known (e.g. after a resume): one user turn
            messages[1]["content"] += f"\n\n{feedback}\n{FORMAT_REMINDER}"
        return messages

    def propose(self, request: ProposalRequest, feedback: str | None = None) -> list[Proposal]:
        result = self.client.complete(self.messages(request, feedback),
                                      purpose="reask" if feedback else "propose")
        items, error = parse_answer(result.text, request)
        self._last = (request.iteration, request.prompt, result.text, error)
        self.client.record_parsed(result.transcript,
                                  {"error": error} if error else {"proposals": items})
        transcripts = (result.transcript,) if result.transcript else ()
        if error:
            return [Proposal(changes={}, hypothesis="", source=self.name, usage=result.usage,
                             transcripts=transcripts, raw=result.text)]
        return [
            Proposal(changes=item["changes"], hypothesis=item["hypothesis"], source=self.name,
                     usage=result.usage if i == 0 else {},
                     transcripts=transcripts if i == 0 else ())
            for i, item in enumerate(items)
        ]


def parse_answer(text: str, request: ProposalRequest) -> tuple[list[dict[str, Any]], str | None]:
    """``([{"changes", "hypothesis"}, ...], None)``, or ``([], reason)`` when unusable."""
    try:
        obj = extract_json_object(text)
    except ValueError as exc:
        return [], str(exc)
    known = set(request.active) | set(request.best_config)
    if isinstance(obj.get("candidates"), list):
        raw_items = obj["candidates"]
    elif "changes" in obj:
        raw_items = [obj]
    elif obj and set(obj) - {"hypothesis"} and set(obj) - {"hypothesis"} <= known:
        # a bare {"NAME": value} mapping of known constants
        raw_items = [{"changes": {k: v for k, v in obj.items() if k != "hypothesis"},
                      "hypothesis": obj.get("hypothesis", "")}]
    else:
        return [], 'the JSON object has no "changes" mapping'
    items = []
    for item in raw_items:
        changes = item.get("changes") if isinstance(item, Mapping) else None
        if isinstance(changes, Mapping) and all(isinstance(k, str) for k in changes):
            hypothesis = item.get("hypothesis")
            items.append({"changes": dict(changes),
                          "hypothesis": "" if hypothesis is None else str(hypothesis).strip()})
    if not items:
        return [], '"changes" is not a mapping of constant names to values'
    return items[: max(1, request.n)], None
