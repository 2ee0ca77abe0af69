"""A real local HTTP server speaking OpenAI's chat-completions wire format, driven by a script.

The LLM is the only thing arx's tests fake, and they fake it at the HTTP boundary: the official
``openai`` client talks to this server over a socket exactly as it would talk to DeepSeek or vLLM.

    server.script(["{\"changes\": {}}", error(429, retry_after=2), hang(5), empty()])

Each ``POST /v1/chat/completions`` consumes the next script item (a plain string is a normal
answer). When the script is exhausted the ``fallback`` reply is served (default: HTTP 500
"script exhausted") so an over-long test fails loudly. ``GET /v1/models`` lists ``model_id``.
Every request is recorded in ``requests`` (method, path, lower-cased headers, parsed body).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Reply:
    """One scripted reply. ``content`` None with status 200 is an empty answer."""

    status: int = 200
    content: str | None = None
    #: a raw body for error replies (default: an OpenAI-style error object)
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: seconds to wait before answering (longer than the client timeout: a hang)
    delay: float = 0.0
    #: answer 400 when the request carries ``response_format``, else answer normally
    reject_response_format: bool = False
    prompt_tokens: int = 100
    completion_tokens: int = 50


def ok(content: str, prompt_tokens: int = 100, completion_tokens: int = 50) -> Reply:
    return Reply(content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def error(status: int, retry_after: float | str | None = None, body: Any = None) -> Reply:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Reply(status=status, body=body, headers=headers)


def hang(seconds: float, then: str = "{}") -> Reply:
    """Wait ``seconds`` before answering ``then`` (the client should have given up by then)."""
    return Reply(content=then, delay=seconds)


def empty() -> Reply:
    return Reply(content="")


def rejects_response_format(content: str = "{}") -> Reply:
    """400 (staying queued) while requests ask for JSON mode; then answer ``content``."""
    return Reply(content=content, reject_response_format=True)


SCRIPT_EXHAUSTED = Reply(status=500, body={"error": {"message": "script exhausted",
                                                     "type": "server_error"}})


class LLMServer:
    """A scripted OpenAI-compatible server on 127.0.0.1; ``stop()``/``start()`` keep the port."""

    def __init__(self, model_id: str = "test-model"):
        self.model_id = model_id
        self.fallback: Reply = SCRIPT_EXHAUSTED
        #: when set, answers every request the script does not: ``responder(body) -> str | Reply``
        #: (a scripted model that reads the prompt, for runs with many kinds of calls)
        self.responder: Any = None
        #: reject every request that carries ``response_format`` (a server without JSON mode)
        self.reject_response_format = False
        self.requests: list[dict[str, Any]] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def script(self, items: Sequence[str | Reply]) -> None:
        """Replace the script; a plain string is a normal answer with that content."""
        with self._lock:
            self._script = [ok(i) if isinstance(i, str) else i for i in items]

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def start(self) -> LLMServer:
        if self._httpd is not None:
            return self
        self._release.clear()
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are then refused) and release any hanging reply."""
        if self._httpd is None:
            return
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def _next(self, wants_json: bool) -> Reply:
        """The next scripted reply; one that rejects JSON mode stays queued while it rejects."""
        with self._lock:
            if not self._script:
                return self.fallback
            if self._script[0].reject_response_format and wants_json:
                return self._script[0]
            return self._script.pop(0)


class _Handler(BaseHTTPRequestHandler):
    server_state: LLMServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before we answered

    def _record(self, body: Any) -> None:
        state = self.server_state
        with state._lock:
            state.requests.append({"method": self.command, "path": self.path,
                                   "headers": {k.lower(): v for k, v in self.headers.items()},
                                   "body": body})

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": self.server_state.model_id, "object": "model", "created": 0,
                     "owned_by": "arx-tests"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode(errors="replace")
        self._record(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        state = self.server_state
        wants_json = isinstance(body, dict) and "response_format" in body
        if wants_json and state.reject_response_format:
            self._send(400, _rf_error())
            return
        reply = state._next(wants_json)
        if reply is state.fallback and state.responder is not None:
            answer = state.responder(body)
            reply = ok(answer) if isinstance(answer, str) else answer
        if reply.delay:
            state._release.wait(reply.delay)
        if reply.reject_response_format and wants_json:
            self._send(400, _rf_error())
        elif reply.status != 200:
            payload = reply.body if reply.body is not None else {
                "error": {"message": f"scripted HTTP {reply.status}", "type": "scripted"}}
            self._send(reply.status, payload, reply.headers)
        else:
            self._send(200, _completion(body, reply), reply.headers)


def _rf_error() -> dict[str, Any]:
    return {"error": {"message": "response_format is not supported by this server",
                      "type": "invalid_request_error", "param": "response_format"}}


def _completion(body: Any, reply: Reply) -> dict[str, Any]:
    model = body.get("model", "test-model") if isinstance(body, dict) else "test-model"
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": reply.content}}],
        "usage": {"prompt_tokens": reply.prompt_tokens,
                  "completion_tokens": reply.completion_tokens,
                  "total_tokens": reply.prompt_tokens + reply.completion_tokens},
    }


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    """A fresh scripted OpenAI-compatible server for one test, stopped afterwards."""
    server = LLMServer().start()
    try:
        yield server
    finally:
        server.stop()
