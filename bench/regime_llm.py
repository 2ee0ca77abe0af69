"""A SIMULATED LLM for the paper's regime: near-deterministic, served over OpenAI's chat API.

The paper's LLM (DeepSeek) proposes almost the same sequence every run. This model does so on
purpose, so that the outer levels can be measured where the paper says they matter. It is a real
local HTTP server (``POST .../chat/completions``, ``GET .../models``) that arx's ordinary
``openai`` client talks to; each answer is a pure function of the request's messages and the seed
in the URL (``http://127.0.0.1:PORT/seed-3/v1``), so a run against it is reproducible and its
transcripts are the whole story (replay reads them, it never calls the model).

What it answers, read from the prompt text arx sends (``Markers``: the runner's wording):

- **Level 1** (the runner's prompt): the first allowed move of a fixed preference list
  (``Model.prefer``: ``NAME+``/``NAME-`` one step up/down, ``NAME>``/``NAME<`` the next/previous
  choice; default: each listed parameter up then down, in the prompt's order), from the current
  best values. A move is allowed when its parameter is listed as changeable (frozen ones are
  not), its value is in range and new, it is not the change of one of the last ``memory`` trials,
  and (``mechanisms`` obeyed) not on an ``Avoid:``/``Tabu`` line. A focus line (mechanisms
  obeyed) and the guidance's parameter names (``guidance`` obeyed) go first. With probability
  ``second_choice`` (a coin seeded by the seed and the prompt) the second allowed move is taken.
  Nothing allowed: its favourite move, repeated.
- **Level 1.5**: freeze the parameter the recent trials changed most often without a keep (the
  one it keeps repeating, as DeepSeek asked in the paper), guidance towards the two least tried.
- **Level 2**: the four rounds; Generate returns real mechanism code (``regime_mechanisms``).
"""

from __future__ import annotations

import ast
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from arx.core.levels.level2 import ROUNDS
from arx.core.levels.level2 import SYSTEM as LEVEL2_SYSTEM

sys.path.insert(0, str(Path(__file__).parent))
import regime_mechanisms  # noqa: E402  (bench/, beside this module)

MODEL_ID = "regime-sim"


@dataclass(frozen=True)
class Markers:
    """The prompt wording the model reads (``runner_repo/runner.py``, ``level15.llm_messages``);
    tests check that each one still occurs in the source it comes from."""

    params: str = "Parameters you may change"
    guidance: str = "Guidance: "
    focus: str = "Explore these parameters next: "
    recent: str = "Recent trials (oldest first):"
    avoid: tuple[str, ...] = (regime_mechanisms.AVOID, "Tabu (")
    level15: str = "Search trace summary"


@dataclass(frozen=True)
class Param:
    name: str
    value: Any
    low: Any = None
    high: Any = None
    log: bool = False
    pow2: bool = False
    choices: tuple = ()

    def move(self, how: str) -> Any:
        """The value one step ``how`` (+, -, >, <) from the current one; None if out of range."""
        v = self.value
        if self.choices:
            i = self.choices.index(v) if v in self.choices else -1
            step = {">": 1, "<": -1, "+": 1, "-": -1}[how]
            return self.choices[(i + step) % len(self.choices)]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or how not in "+-":
            return None
        up = how == "+"
        if self.pow2 or self.log:
            new = v * 2 if up else v / 2
            new = int(round(new)) if isinstance(v, int) else new
        elif isinstance(v, int):
            new = v + (1 if up else -1)
        else:
            new = v + (self.high - self.low) / 10 * (1 if up else -1)
        if isinstance(new, float):
            new = float(f"{new:.6g}")
        if (self.low is not None and new < self.low) or (self.high is not None and new > self.high):
            return None
        return new


@dataclass(frozen=True)
class Trial:
    iteration: int
    changes: dict[str, Any]
    status: str


@dataclass(frozen=True)
class Prompt:
    """What a Level-1 prompt says, parsed."""

    params: dict[str, Param]
    guidance: str = ""
    focus: tuple[str, ...] = ()
    avoid: frozenset = frozenset()
    trials: tuple[Trial, ...] = ()
    n: int = 1


def literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_param(name: str, value: str, describe: str) -> Param:
    rest = describe[len(name):].strip() if describe.startswith(name) else describe
    if rest.startswith("one of "):
        choices = literal("[" + rest[len("one of "):].removesuffix(" (locked)") + "]")
        return Param(name, literal(value), choices=tuple(choices) if isinstance(choices, list)
                     else ())
    m = re.search(r"in \[(.*?), (.*?)\]", rest)
    if not m:
        return Param(name, literal(value))
    return Param(name, literal(value), literal(m.group(1)), literal(m.group(2)),
                 log=rest.endswith(" log") or " log " in rest, pow2="power of two" in rest)


CHANGE = re.compile(r"([A-Za-z_]\w*)=(.+?)(?=, [A-Za-z_]\w*=|$)")
TRIAL = re.compile(r"^#(\d+) (.*): \S+ \[(\w+)\]")


def parse_prompt(text: str, markers: Markers = Markers()) -> Prompt:
    params: dict[str, Param] = {}
    guidance, focus, avoid, trials = "", (), set(), []
    section = ""
    for line in text.splitlines():
        if line.startswith(markers.params):
            section = "params"
        elif line.startswith(markers.recent):
            section = "recent"
        elif not line.strip() or line.startswith("```"):
            section = ""
        elif section == "params":
            m = re.match(r"^- ([A-Za-z_]\w*) = (.*)   \[(.*)\]$", line)
            if m:
                params[m.group(1)] = parse_param(m.group(1), m.group(2), m.group(3))
        elif section == "recent":
            m = TRIAL.match(line)
            if m:
                changes = {} if m.group(2) == "-" else {
                    k: literal(v) for k, v in CHANGE.findall(m.group(2))}
                trials.append(Trial(int(m.group(1)), changes, m.group(3)))
        if line.startswith(markers.guidance):
            guidance = line[len(markers.guidance):]
        elif line.startswith(markers.focus):
            focus = tuple(n.strip() for n in line[len(markers.focus):].split(","))
        elif any(line.startswith(a) for a in markers.avoid):
            shown = line.split(": ", 1)[1] if ": " in line else ""
            avoid |= {(k, repr(literal(v))) for k, v in CHANGE.findall(shown)}
    many = re.search(r"Give (\d+) different candidates", text)
    return Prompt(params, guidance, focus, frozenset(avoid), tuple(trials),
                  int(many.group(1)) if many else 1)


@dataclass(frozen=True)
class Model:
    """The simulated LLM's settings (the bench's flags)."""

    #: the preference list (``NAME+``, ``NAME-``, ``NAME>``, ``NAME<``); empty: prompt order
    prefer: tuple[str, ...] = ()
    second_choice: float = 0.1
    memory: int = 2
    #: whether Level-1 proposals follow Level 1.5's guidance / the mechanisms' prompt lines
    guidance: bool = True
    mechanisms: bool = True
    markers: Markers = field(default_factory=Markers)

    def moves(self, prompt: Prompt) -> list[dict[str, Any]]:
        """Every move in preference order, allowed or not, as ``{NAME: value}`` changes."""
        prefer = self.prefer or tuple(f"{n}{s}" for n in prompt.params for s in "+-")
        out = []
        for item in prefer:
            name, how = item[:-1], item[-1]
            param = prompt.params.get(name)
            new = param.move(how) if param else None
            if param is not None and new is not None and new != param.value:
                out.append({name: new})
        return out

    def ranked(self, prompt: Prompt) -> list[dict[str, Any]]:
        """The allowed moves, best first (focus, then guidance, then the preference order)."""
        recent = [t.changes for t in prompt.trials[-self.memory:]] if self.memory else []
        allowed = [m for m in self.moves(prompt) if m not in recent and not (
            self.mechanisms and any((k, repr(v)) in prompt.avoid for k, v in m.items()))]
        focus = set(prompt.focus) if self.mechanisms else set()
        steer = {n for n in prompt.params if re.search(rf"\b{re.escape(n)}\b", prompt.guidance)
                 } if self.guidance else set()

        def tier(move: dict[str, Any]) -> int:
            name = next(iter(move))
            return 0 if name in focus else 1 if name in steer else 2
        return sorted(allowed, key=tier)  # stable: the preference order within a tier

    def propose(self, text: str, seed: int) -> str:
        prompt = parse_prompt(text, self.markers)
        ranked = self.ranked(prompt) or self.moves(prompt)[:1]
        if len(ranked) > 1 and random.Random(f"{seed}|{text}").random() < self.second_choice:
            ranked = [ranked[1], ranked[0], *ranked[2:]]
        picks = [{"changes": m, "hypothesis": "try " + ", ".join(f"{k}={v!r}" for k, v in
                                                                m.items())}
                 for m in ranked[:prompt.n]] or [{"changes": {}, "hypothesis": "nothing left"}]
        return json.dumps(picks[0] if prompt.n == 1 else {"candidates": picks})

    def level15(self, text: str) -> str:
        tried = {m.group(1): int(m.group(2)) for m in re.finditer(
            r"^- ([A-Za-z_]\w*): tried (\d+)", text, re.M)}
        recent = text.split("Recent trials: ", 1)[1].splitlines()[0] if "Recent trials: " in \
            text else ""
        counts: Counter[str] = Counter()
        for part in recent.split("; "):
            if " keep" in part:
                continue
            counts.update(n for n in tried if re.search(rf"'{re.escape(n)}'", part))
        freeze = [n for n, c in counts.most_common(1) if c >= 3]
        rest = sorted((n for n in tried if n not in freeze), key=lambda n: (tried[n], n))[:2]
        guidance = f"Prefer changes to {', '.join(rest)}: changed least so far." if rest else ""
        return json.dumps({"freeze": freeze, "unfreeze": [], "guidance": guidance})

    def level2(self, messages: list[dict[str, Any]]) -> str:
        text = str(messages[-1].get("content", ""))
        first = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"),
                     "")
        m = re.search(r"Mechanisms already tried on this run: (.*)\.", first)
        # once each: today's prompt names a judged mechanism once per event (pass, no_benefit)
        tried = [] if not m or m.group(1) == "none" else list(dict.fromkeys(
            t.strip() for t in m.group(1).split(",")))
        mech = regime_mechanisms.mechanism(tried)
        if "gate refused" in text or ROUNDS[3].upper() in text:
            return json.dumps(mech)
        if ROUNDS[2].upper() in text:
            return f"{mech['name']}: new_helper_class + modify_init. {mech['description']}"
        if ROUNDS[1].upper() in text:
            return f"{mech['name']} fits the trace best.\nSelected: {mech['name']}"
        return "\n".join(f"{i + 1}. {name} ({domain}): {about}"
                         for i, (name, domain, _code, about) in enumerate(
                             regime_mechanisms.KINDS))

    def answer(self, messages: list[dict[str, Any]], seed: int) -> str:
        """The answer to one chat request: Level 2, Level 1.5 or a Level-1 proposal."""
        system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"),
                      "")
        last = str(messages[-1].get("content", "")) if messages else ""
        if system == LEVEL2_SYSTEM:
            return self.level2(messages)
        if self.markers.level15 in last:
            return self.level15(last)
        user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
        return self.propose(user, seed)


class Endpoint:
    """The model behind a real local OpenAI-compatible HTTP server; ``base_url(seed)``."""

    def __init__(self, model: Model, port: int = 0):
        """``port`` 0: any free one. A fixed port lets a later bench resume these runs: their
        stored ``--llm`` is this URL."""
        self.model = model
        self.calls = 0
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"endpoint": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def base_url(self, seed: int) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/seed-{seed}/v1"

    def __enter__(self) -> Endpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    endpoint: Endpoint

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "arx-bench"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        m = re.match(r"^/seed-(-?\d+)/v1/chat/completions/?$", self.path) or \
            re.match(r"^/v1/chat/completions/?$", self.path)
        if not m:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        seed = int(m.group(1)) if m.groups() else 0
        try:
            text = self.endpoint.model.answer(list(body.get("messages") or []), seed)
        except Exception as exc:  # a bug in the simulation: a loud server error, not a hang
            self._send(500, {"error": {"message": f"simulated model failed: {exc!r}"}})
            return
        with self.endpoint._lock:
            self.endpoint.calls += 1
        self._send(200, {
            "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", MODEL_ID),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
