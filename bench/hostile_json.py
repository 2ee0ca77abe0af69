"""How long arx takes to parse or refuse hostile LLM answers (issue #21's "within 1 s each").

    python bench/hostile_json.py

Prints, for each answer, what ``extract_json_object`` made of it and the seconds it took (best
of 3). Before the one-pass extractor, 20k characters of ``{`` took 22.8 s and 200k about 38 min.
"""

from __future__ import annotations

import json
import time

from arx.core.llm.jsonextract import extract_json_object

ANSWERS = {
    "200k '{'": "{" * 200_000,
    "20k '[' then 20k ']'": "[" * 20_000 + "]" * 20_000,
    "990-deep value": '{"changes": ' + "[" * 990 + "]" * 990 + "}",
    "990-deep objects": "{" * 990 + "}" * 990,
    "30k unclosed dicts": "{'a': 1 " * 30_000,
    "100k '{' in a string": '{"x": "' + "{" * 100_000 + '"',
    "140 kB hypothesis": "Here:\n" + json.dumps({"changes": {"LR": 0.1},
                                                 "hypothesis": "because " * 17_500}),
}


def main() -> None:
    print(f"{'answer':<24} {'outcome':<40} {'seconds':>8}")
    for name, text in ANSWERS.items():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            try:
                out = f"parsed ({len(json.dumps(extract_json_object(text)))} chars)"
            except ValueError as exc:
                out = f"refused: {str(exc)[:30]}"
            best = min(best, time.perf_counter() - start)
        print(f"{name:<24} {out:<40} {best:>8.3f}")


if __name__ == "__main__":
    main()
