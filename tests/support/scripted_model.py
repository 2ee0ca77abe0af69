"""A scripted model for the LLM server's ``responder``: it reads each arx prompt and answers as
the model would (Level 1 proposals, Level 1.5, Level 2's four rounds). The model is the only
thing these tests fake, at the HTTP boundary."""

from __future__ import annotations

import json

DEFAULT_CHANGES = ({"LR": 0.005}, {"DEPTH": 4}, {"BATCH_SIZE": 128}, {"WEIGHT_DECAY": 0.05},
                   {"DEPTH": 3}, {"LR": 0.004}, {"BATCH_SIZE": 64}, {"USE_BIAS": False})


def responder(generate, l1_changes=DEFAULT_CHANGES):
    """Answers each kind of arx request from its prompt. ``generate`` lists the Generate (and
    repair) answers in order, the last one repeated."""
    state = {"l1": 0, "generate": 0}

    def answer(body):
        text = body["messages"][-1]["content"]
        if "EXPLORE" in text:
            return "1. FocusLR (design of experiments): focus on LR; risk: tunnel vision."
        if "CRITIQUE" in text:
            return "FocusLR is cheap and the trace shows LR matters.\nSelected: FocusLR"
        if "SPECIFY" in text:
            return "FocusLR: new_helper_class + modify_init; focus(ctx) -> ['LR']."
        if "GENERATE" in text or "gate refused" in text:
            state["generate"] += 1
            item = generate[min(state["generate"], len(generate)) - 1]
            return item if isinstance(item, str) else json.dumps(item)
        if "Search trace summary" in text:
            return '{"freeze": [], "unfreeze": [], "guidance": "Keep going."}'
        change = l1_changes[state["l1"] % len(l1_changes)]
        state["l1"] += 1
        return json.dumps({"changes": change, "hypothesis": f"try {change}"})

    return answer
