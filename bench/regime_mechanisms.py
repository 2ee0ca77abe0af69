"""The two mechanisms the simulated LLM of ``regime_llm.py`` writes at Level 2, in turn.

Real runner code (``runner_repo/runner.py``'s mechanism hooks), returned as a Generate answer so
that arx's own validation gate (parse, ruff, safety, smoke test) judges it like any LLM's:

- ``TriedValuesTabu``: every (parameter, value) a trial set without a keep is tabu; the prompt
  gets an ``Avoid:`` line naming them and candidates that hit one are dropped (never all).
- ``LeastChangedFocus``: the active parameter the run has changed least often is the focus
  (the prompt's "Explore these parameters next" line).

Both read ``ctx["history"]`` and keep no state, so a resumed or replayed runner behaves the same.
"""

from __future__ import annotations

from typing import Any

#: the prefix of the tabu's prompt line (the simulated LLM obeys lines that start with it)
AVOID = "Avoid: "

TABU_CODE = '''class {name}:
    """Tabu of tried values: a (parameter, value) a trial set without a keep is not tried again."""

    def tabu(self, ctx):
        out = set()
        for record in ctx.get("history") or []:
            if record.get("kind", "trial") != "trial" or record.get("status") == "keep":
                continue
            for key, value in (record.get("changes") or {{}}).items():
                out.add((key, repr(value)))
        return out

    def hits(self, tabu, candidate):
        changes = candidate.get("changes") or {{}}
        return sum(1 for key, value in changes.items() if (key, repr(value)) in tabu)

    def filter_candidates(self, ctx, candidates):
        candidates = list(candidates)
        tabu = self.tabu(ctx)
        free = [c for c in candidates if self.hits(tabu, c) == 0]
        return free or candidates

    def extend_prompt(self, ctx, lines):
        tabu = sorted(self.tabu(ctx))
        if not tabu:
            return lines
        shown = ", ".join(key + "=" + value for key, value in tabu)
        return list(lines) + ["", "{avoid}" + shown]
'''

FOCUS_CODE = '''class {name}:
    """Least-changed focus: explore the active parameter the run has changed least often."""

    def focus(self, ctx):
        counts = {{key: 0 for key in ctx.get("active") or []}}
        for record in ctx.get("history") or []:
            for key in record.get("changes") or {{}}:
                if key in counts:
                    counts[key] += 1
        if not counts:
            return None
        least = min(counts.values())
        return [key for key, n in counts.items() if n == least][:1]
'''

KINDS = (
    ("TriedValuesTabu", "tabu search", TABU_CODE,
     "Drops proposals that repeat a (parameter, value) already tried without a keep and lists "
     "them in the prompt."),
    ("LeastChangedFocus", "design of experiments", FOCUS_CODE,
     "Focuses the proposals on the active parameter changed least often so far."),
)


def mechanism(tried: list[str]) -> dict[str, Any]:
    """The next mechanism, as a Generate answer's JSON object: the kinds in turn (the tabu
    first), each name made unique against the ``tried`` ones."""
    base, domain, code, description = KINDS[len(tried) % len(KINDS)]
    name, n = base, 1
    while name in tried:
        n += 1
        name = f"{base}{n}"
    source = code.format(name=name, avoid=AVOID)
    return {"name": name, "domain": domain, "description": description, "patches": [
        {"kind": "new_helper_class", "name": name, "target": None, "code": source},
        {"kind": "modify_init", "name": name, "target": None,
         "code": f"self.mechanisms.append({name}())\n"}]}
