"""Talking to an OpenAI-compatible chat endpoint: retries, transcripts, cost.

``ChatClient.complete`` (settings from ``arx.core.llm.settings``) sends one chat
request through the official ``openai`` client with its own retry loop (exponential backoff with
jitter on 429/5xx/connection errors, ``Retry-After`` honoured, ``LLMError`` after
``max_retries`` retries), uses JSON mode where the server accepts it, and writes every exchange
to ``<transcript_dir>/NNNN-<purpose>.json``.

API keys are read from the environment at the moment the client is made and live only inside
the ``openai`` client: settings, transcripts, errors and logs carry variable names, never keys.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arx.core.errors import LLMError
from arx.core.llm.settings import DUMMY_KEY, LLMSettings, api_key, public_url

if TYPE_CHECKING:
    import openai

log = logging.getLogger("arx.llm")

MAX_RETRY_AFTER_S = 600.0
#: the most characters of an answer arx keeps: the rest is cut before anything reads it, and
#: the transcript says so (``response_chars``, ``response_cut``); a 20 MB answer leaves at
#: most this much (plus the prompt, at most ``policy.MAX_PROMPT``) in its transcript
MAX_ANSWER = 200_000

@dataclass(frozen=True)
class ChatResult:
    """One answered request. ``transcript`` is relative to the client's ``rel_root``."""

    text: str
    usage: Mapping[str, float]
    latency_s: float
    transcript: str | None
    attempts: int
    model: str = ""
    finish_reason: str | None = None


@dataclass
class _Call:
    purpose: str
    messages: list[dict]
    params: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)


class ChatClient:
    """Sends chat requests with retries and records each one; one per run and provider.

    The answer to "does this server accept ``response_format``?" is remembered per client.
    ``sleep`` and ``rng`` (the backoff jitter) are injectable for tests; ``env`` supplies the key.
    """

    def __init__(self, settings: LLMSettings, transcript_dir: Path | None,
                 rel_root: Path | None = None, sleep: Callable[[float], None] = time.sleep,
                 env: Mapping[str, str] = os.environ, rng: random.Random | None = None):
        key = api_key(settings, env)
        if key is None:
            raise LLMError(f"no API key for {public_url(settings.base_url)}",
                           hint=f"set {' or '.join(settings.api_key_env)}")
        self.settings = settings
        self.transcript_dir = Path(transcript_dir) if transcript_dir is not None else None
        self.rel_root = Path(rel_root) if rel_root is not None else None
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._secret = key
        self._client = _sdk().OpenAI(base_url=settings.base_url, api_key=key,
                                     timeout=settings.timeout_s, max_retries=0)
        self._model = settings.model
        self.json_supported: bool | None = None  # None: not known yet
        self._lock = threading.Lock()
        self._totals = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}

    @property
    def totals(self) -> dict[str, float]:
        """Requests answered, tokens and cost so far (this process)."""
        with self._lock:
            return dict(self._totals)

    @property
    def model(self) -> str:
        if not self._model:
            self._model = self._discover_model()
        return self._model

    def complete(self, messages: list[dict], purpose: str, json_mode: bool | None = None,
                 parsed_hook: Callable[[str], Any] | None = None) -> ChatResult:
        """Send ``messages``; return the answer or raise ``LLMError`` after the retries.

        ``parsed_hook(text)`` may parse the answer; its result (or error, which is re-raised) is
        stored in the transcript. Otherwise use ``record_parsed`` later.
        """
        want_json = self.settings.json_mode if json_mode is None else json_mode
        # JSON mode needs the word "json" in the prompt on OpenAI and DeepSeek
        want_json = want_json and "json" in json.dumps(messages).lower()
        call = _Call(purpose, [dict(m) for m in messages])
        started = time.monotonic()
        try:
            text, response, latency = self._send(call, want_json)
        except LLMError as exc:
            self._write(call, {"error": exc.message,
                               "wall_s": round(time.monotonic() - started, 4)})
            raise
        usage = self._usage(response)
        with self._lock:
            self._totals["calls"] += 1
            for k, v in usage.items():
                self._totals[k] += v
        finish = response.choices[0].finish_reason if response.choices else None
        record: dict[str, Any] = {"response": text[:MAX_ANSWER], "finish_reason": finish,
                                  "usage": usage, "latency_s": round(latency, 4),
                                  "wall_s": round(time.monotonic() - started, 4)}
        if len(text) > MAX_ANSWER:
            record.update(response_chars=len(text), response_cut=MAX_ANSWER)
            text = text[:MAX_ANSWER]
        error: Exception | None = None
        if parsed_hook is not None:
            try:
                record["parsed"] = parsed_hook(text)
            except (ValueError, TypeError, KeyError) as exc:  # recorded, re-raised below
                record["parsed"], error = {"error": str(exc)}, exc
        path = self._write(call, record)
        if error is not None:
            raise error
        return ChatResult(text=text, usage=usage, latency_s=latency, transcript=path,
                          attempts=len(call.attempts), model=call.params.get("model", ""),
                          finish_reason=finish)

    def record_parsed(self, transcript: str | None, parsed: Any) -> None:
        """Add the parsed result (an exception is stored as ``{"error": ...}``) to a transcript."""
        if not transcript:
            return
        path = Path(transcript)
        if not path.is_absolute() and self.rel_root is not None:
            path = self.rel_root / path
        data = json.loads(path.read_text())
        data["parsed"] = {"error": str(parsed)} if isinstance(parsed, BaseException) else parsed
        _write_json(path, self._scrub(_dumps(data)))

    # -- the retry loop ------------------------------------------------------------------

    def _send(self, call: _Call, want_json: bool) -> tuple[str, Any, float]:
        openai = _sdk()
        s = self.settings
        failures, last, probing = 0, "no attempt", False
        while True:
            use_json = want_json and self.json_supported is not False
            params: dict[str, Any] = {"model": self.model, "temperature": s.temperature}
            if s.max_tokens is not None:
                params["max_tokens"] = s.max_tokens
            if use_json:
                params["response_format"] = {"type": "json_object"}
            call.params = params
            attempt: dict[str, Any] = {"n": len(call.attempts) + 1, "json_mode": use_json}
            call.attempts.append(attempt)
            t0 = time.monotonic()
            retry_after: float | None = None
            try:
                response = self._client.chat.completions.create(messages=call.messages,
                                                                **params)
                latency = time.monotonic() - t0
                text = (response.choices[0].message.content or "") if response.choices else ""
                if text.strip():
                    attempt.update(status=200, latency_s=round(latency, 4))
                    if use_json:
                        self.json_supported = True
                    return text, response, latency
                last = "the model returned empty content"
            except openai.APIStatusError as exc:
                code = exc.status_code
                last = f"HTTP {code}: {self._scrub(_message(exc))}"
                attempt.update(status=code, error=last)
                if code in (400, 422) and use_json and self.json_supported is None:
                    # probably no JSON mode here: ask again without it; remembered if that works
                    self.json_supported, probing = False, True
                    log.info("%s rejected response_format; retrying without JSON mode",
                             public_url(s.base_url))
                    continue
                if code != 429 and code < 500:
                    if probing and code in (400, 422):
                        self.json_supported = None  # the 400 was not about JSON mode
                    raise LLMError(f"LLM request to {public_url(s.base_url)} refused: {last}",
                                   hint=_hint(code)) from None
                retry_after = _retry_after(exc.response.headers)
            except openai.APITimeoutError:
                last = f"no answer within {s.timeout_s:g} s (timeout)"
            except openai.APIConnectionError as exc:
                last = f"connection failed: {self._scrub(str(exc.__cause__ or exc))}"
            except openai.APIResponseValidationError as exc:
                last = f"malformed response: {self._scrub(str(exc))}"
            except openai.OpenAIError as exc:
                attempt["error"] = last = self._scrub(f"{type(exc).__name__}: {exc}")
                raise LLMError(f"LLM request to {public_url(s.base_url)} failed: {last}",
                               hint=_hint(0)) from None
            attempt["error"] = last
            failures += 1
            if failures > s.max_retries:
                raise LLMError(
                    f"LLM request to {public_url(s.base_url)} failed {failures} times in a row; "
                    f"last error: {last}",
                    hint="check the endpoint and key (--llm, --model); the run is resumable "
                         "with `arx run --resume NAME`; [llm] max_retries raises the limit",
                ) from None
            delay = self._backoff(failures, retry_after)
            attempt["sleep_s"] = round(delay, 3)
            log.warning("LLM attempt %d failed (%s); retrying in %.1f s", failures, last, delay)
            self._sleep(delay)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
        s = self.settings
        ceiling = min(s.max_backoff_s, s.backoff_s * 2 ** (failures - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())  # "equal jitter"

    def _discover_model(self) -> str:
        openai = _sdk()
        try:
            models = [m.id for m in self._client.models.list()]
        except openai.OpenAIError as exc:
            raise LLMError(f"could not list the models of {public_url(self.settings.base_url)}: "
                           f"{self._scrub(str(exc))}", hint="name one with --model") from None
        if not models:
            raise LLMError(f"{public_url(self.settings.base_url)} serves no model",
                           hint="name one with --model")
        return models[0]

    def _usage(self, response: Any) -> dict[str, float]:
        u = getattr(response, "usage", None)
        p = int(getattr(u, "prompt_tokens", 0) or 0)
        c = int(getattr(u, "completion_tokens", 0) or 0)
        cost = (p * self.settings.price_in + c * self.settings.price_out) / 1e6
        return {"prompt_tokens": p, "completion_tokens": c, "cost_usd": round(cost, 8)}

    # -- transcripts ---------------------------------------------------------------------

    def _write(self, call: _Call, outcome: dict[str, Any]) -> str | None:
        if self.transcript_dir is None:
            return None
        s = self.settings
        data = {"purpose": call.purpose, "provider": s.provider,
                "base_url": public_url(s.base_url), "model": call.params.get("model", s.model),
                "params": {k: v for k, v in call.params.items() if k != "model"},
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "messages": call.messages,
                "attempts": call.attempts, **outcome}
        text = self._scrub(_dumps(data))
        slug = re.sub(r"[^a-z0-9_-]+", "-", call.purpose.lower()).strip("-") or "call"
        with self._lock:
            self.transcript_dir.mkdir(parents=True, exist_ok=True)
            n = next_number(self.transcript_dir)
            path = self.transcript_dir / f"{n:04d}-{slug}.json"
            _write_json(path, text)
        if self.rel_root is not None:
            try:
                return path.resolve().relative_to(self.rel_root.resolve()).as_posix()
            except ValueError:
                pass
        return path.as_posix()

    def _scrub(self, text: str) -> str:
        if self._secret == DUMMY_KEY or len(self._secret) < 8:
            return text  # too short to scrub without mangling the text (and not a real key)
        return text.replace(self._secret, "***")


def next_number(directory: Path) -> int:
    """1 + the highest ``NNNN-`` prefix in ``directory`` (so a resumed run appends)."""
    numbers = [int(m.group(1)) for p in directory.glob("*.json")
               if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=0) + 1


def _retry_after(headers: Mapping[str, str]) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _sdk() -> Any:
    """The ``openai`` package, imported on first use: it takes about half a second to import,
    which every ``arx`` command would pay, while only a run that talks to an LLM needs it."""
    # imported here, not at the top: see the docstring
    import openai
    return openai


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(exc.message)


def _hint(code: int) -> str:
    if code in (401, 403):
        return "check the API key variable (ARX_API_KEY or the provider's) and --llm"
    if code == 404:
        return "check --model and the base URL of --llm"
    return "check --llm, --model and the [llm] settings in arx.toml"


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=repr) + "\n"


def _write_json(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


