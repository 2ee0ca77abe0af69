"""The chat client against a real local HTTP server, through the official openai client."""

import json
import random
import time

import pytest

from arx.core.errors import ConfigError, LLMError
from arx.core.llm.client import MAX_ANSWER, ChatClient, _retry_after, next_number
from arx.core.llm.settings import (
    DUMMY_KEY,
    PRESETS,
    LLMSettings,
    api_key,
    public_url,
    resolve_llm,
    secret_names,
    secret_names_in,
)

from support.llm_server import Reply, empty, error, hang, ok, rejects_response_format

PLANTED = "sk-test-PLANTED-123"
ASK = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "go"}]


def settings_for(server, **kw) -> LLMSettings:
    base = {"provider": "local", "base_url": server.base_url, "model": "m",
            "api_key_env": ("ARX_API_KEY",), "timeout_s": 5, "max_retries": 3}
    return LLMSettings(**{**base, **kw})


@pytest.fixture
def make_client(llm_server, tmp_path):
    sleeps: list[float] = []

    def make(env=None, transcripts=True, **kw):
        client = ChatClient(settings_for(llm_server, **kw),
                            tmp_path / "runs" / "r1" / "llm" if transcripts else None,
                            rel_root=tmp_path, sleep=sleeps.append, env=env or {},
                            rng=random.Random(0))
        client.sleeps = sleeps
        return client

    return make


def test_clean_answer_with_usage_and_json_mode(llm_server, make_client):
    llm_server.script([ok('{"changes": {"LR": 0.01}}', prompt_tokens=12, completion_tokens=7)])
    client = make_client()
    result = client.complete(ASK, purpose="propose")
    assert result.text == '{"changes": {"LR": 0.01}}'
    assert result.usage == {"prompt_tokens": 12, "completion_tokens": 7, "cost_usd": 0.0}
    assert result.attempts == 1 and result.latency_s > 0
    (req,) = llm_server.chat_requests
    assert req["body"]["model"] == "m"
    assert req["body"]["messages"] == ASK
    assert req["body"]["response_format"] == {"type": "json_object"}
    assert req["headers"]["authorization"] == f"Bearer {DUMMY_KEY}"
    assert client.sleeps == []


def test_a_20_mb_answer_is_cut_before_anyone_reads_it_and_the_transcript_says_so(
        llm_server, make_client, tmp_path):
    llm_server.script([ok('{"changes": {"LR": 0.01}} ' + "x" * (20 << 20))])
    result = make_client().complete(ASK, purpose="propose")
    assert len(result.text) == MAX_ANSWER and result.text.startswith('{"changes"')
    (path,) = (tmp_path / "runs" / "r1" / "llm").iterdir()
    assert path.stat().st_size < MAX_ANSWER + 10_000
    data = json.loads(path.read_text())
    assert data["response_cut"] == MAX_ANSWER and data["response_chars"] > 20 << 20


def test_no_json_mode_when_the_prompt_does_not_mention_json(llm_server, make_client):
    llm_server.script(["plain"])
    make_client().complete([{"role": "user", "content": "hi"}], purpose="p")
    assert "response_format" not in llm_server.chat_requests[0]["body"]


def test_429_honours_retry_after(llm_server, make_client):
    llm_server.script([error(429, retry_after=7), "fine"])
    client = make_client()
    result = client.complete(ASK, purpose="p")
    assert result.text == "fine" and result.attempts == 2
    assert client.sleeps == [7.0]


def test_retry_after_formats():
    assert _retry_after({"retry-after": "3"}) == 3.0
    assert _retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < _retry_after({"retry-after": date}) <= 30
    assert _retry_after({}) is None and _retry_after({"retry-after": "soon"}) is None


def test_500_twice_then_success_backs_off_exponentially_with_jitter(llm_server, make_client):
    llm_server.script([error(500), error(502), "ok"])
    client = make_client(backoff_s=1.0)
    assert client.complete(ASK, purpose="p").attempts == 3
    first, second = client.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0


def test_backoff_is_capped(llm_server, make_client):
    llm_server.script([error(503)] * 4 + ["ok"])
    client = make_client(backoff_s=10, max_backoff_s=15, max_retries=4)
    client.complete(ASK, purpose="p")
    assert max(client.sleeps) <= 15 and client.sleeps[-1] >= 7.5


def test_connection_refused_stops_after_the_retries_naming_the_url(llm_server, make_client):
    client = make_client(max_retries=2)
    llm_server.stop()
    with pytest.raises(LLMError, match="failed 3 times in a row") as info:
        client.complete(ASK, purpose="p")
    assert llm_server.base_url in str(info.value)
    assert "resumable" in str(info.value)
    assert len(client.sleeps) == 2


def test_server_comes_back_after_a_stop(llm_server, make_client):
    client = make_client(max_retries=0)
    llm_server.stop()
    with pytest.raises(LLMError):
        client.complete(ASK, purpose="p")
    llm_server.start()
    llm_server.script(["back"])
    assert client.complete(ASK, purpose="p").text == "back"


def test_a_hang_past_the_timeout_is_retried(llm_server, make_client):
    llm_server.script([hang(3, then="late"), "on time"])
    client = make_client(timeout_s=0.3)
    t0 = time.monotonic()
    result = client.complete(ASK, purpose="p")
    assert result.text == "on time" and result.attempts == 2
    assert time.monotonic() - t0 < 2
    assert len(client.sleeps) == 1


def test_empty_content_is_a_failed_attempt(llm_server, make_client):
    llm_server.script([empty(), Reply(content=None), "finally"])
    client = make_client()
    assert client.complete(ASK, purpose="p").text == "finally"
    assert len(client.sleeps) == 2


def test_always_empty_ends_in_llm_error(llm_server, make_client):
    llm_server.script([empty()] * 3)
    with pytest.raises(LLMError, match="empty content"):
        make_client(max_retries=2).complete(ASK, purpose="p")


def test_response_format_rejected_is_dropped_and_remembered(llm_server, make_client):
    llm_server.reject_response_format = True
    llm_server.script(["one", "two"])
    client = make_client()
    assert client.complete(ASK, purpose="p").text == "one"
    assert client.complete(ASK, purpose="p").text == "two"
    sent = ["response_format" in r["body"] for r in llm_server.chat_requests]
    assert sent == [True, False, False]
    assert client.json_supported is False
    assert client.sleeps == []  # not a failure: no backoff


def test_scripted_response_format_rejection(llm_server, make_client):
    llm_server.script([rejects_response_format("{}")])
    assert make_client().complete(ASK, purpose="p").text == "{}"


def test_json_mode_accepted_is_remembered(llm_server, make_client):
    llm_server.script(["{}"])
    client = make_client()
    client.complete(ASK, purpose="p")
    assert client.json_supported is True


def test_a_400_unrelated_to_json_mode_is_not_remembered(llm_server, make_client):
    llm_server.script([error(400), error(400)])
    client = make_client()
    with pytest.raises(LLMError, match="HTTP 400"):
        client.complete(ASK, purpose="p")
    assert client.json_supported is None


@pytest.mark.parametrize(("status", "hint"), [(401, "key"), (404, "--model"), (422, "--llm")])
def test_client_errors_are_not_retried(llm_server, make_client, status, hint):
    llm_server.script([error(status)])
    client = make_client(json_mode=False)
    with pytest.raises(LLMError, match=f"HTTP {status}") as info:
        client.complete(ASK, purpose="p")
    assert hint in info.value.hint
    assert client.sleeps == [] and len(llm_server.chat_requests) == 1


def test_transcripts_number_on_from_existing_files_and_never_hold_the_key(
        llm_server, make_client, tmp_path):
    llm_dir = tmp_path / "runs" / "r1" / "llm"
    llm_dir.mkdir(parents=True)
    (llm_dir / "0007-propose.json").write_text("{}")
    echo = {"error": {"message": f"Incorrect API key provided: {PLANTED}"}}
    llm_server.script([ok("first", prompt_tokens=3, completion_tokens=4),
                       error(500, body=echo), "second", error(401, body=echo)])
    client = make_client(env={"ARX_API_KEY": PLANTED}, price_in=1, price_out=2)
    r1 = client.complete(ASK, purpose="propose")
    r2 = client.complete(ASK, purpose="Re-ask #2")
    with pytest.raises(LLMError) as info:
        client.complete(ASK, purpose="propose")
    assert PLANTED not in str(info.value)
    assert r1.transcript == "runs/r1/llm/0008-propose.json"
    assert r2.transcript == "runs/r1/llm/0009-re-ask-2.json"
    assert sorted(p.name for p in llm_dir.iterdir()) == [
        "0007-propose.json", "0008-propose.json", "0009-re-ask-2.json", "0010-propose.json"]
    data = json.loads((tmp_path / r1.transcript).read_text())
    assert data["messages"] == ASK and data["model"] == "m" and data["response"] == "first"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "cost_usd": 1.1e-05}
    assert data["latency_s"] > 0 and data["params"]["temperature"] == 0.7
    failed = json.loads((llm_dir / "0010-propose.json").read_text())
    assert "HTTP 401" in failed["error"]
    # the key went over the wire, and nowhere else
    assert all(r["headers"]["authorization"] == f"Bearer {PLANTED}"
               for r in llm_server.chat_requests)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PLANTED not in path.read_text(), path


def test_record_parsed_adds_to_the_transcript(llm_server, make_client, tmp_path):
    llm_server.script(["{}", "{}"])
    client = make_client()
    result = client.complete(ASK, purpose="p")
    client.record_parsed(result.transcript, {"proposals": [{"changes": {"A": (1, 2)}}]})
    data = json.loads((tmp_path / result.transcript).read_text())
    assert data["parsed"] == {"proposals": [{"changes": {"A": [1, 2]}}]}
    hooked = client.complete(ASK, purpose="p", parsed_hook=lambda text: {"len": len(text)})
    assert json.loads((tmp_path / hooked.transcript).read_text())["parsed"] == {"len": 2}


def test_no_transcript_dir_writes_nothing(llm_server, make_client, tmp_path):
    llm_server.script(["x"])
    assert make_client(transcripts=False).complete(ASK, purpose="p").transcript is None
    assert not (tmp_path / "runs").exists()


def test_cost_and_totals_from_prices(llm_server, make_client):
    llm_server.script([ok("a", prompt_tokens=1000, completion_tokens=500),
                       ok("b", prompt_tokens=2000, completion_tokens=0)])
    client = make_client(price_in=2.0, price_out=10.0)
    assert client.complete(ASK, purpose="p").usage["cost_usd"] == pytest.approx(0.007)
    client.complete(ASK, purpose="p")
    assert client.totals == {"calls": 2, "prompt_tokens": 3000, "completion_tokens": 500,
                             "cost_usd": pytest.approx(0.011)}


def test_empty_model_asks_the_server(llm_server, make_client):
    llm_server.script(["x"])
    result = make_client(model="").complete(ASK, purpose="p")
    assert result.model == "test-model"
    assert llm_server.chat_requests[0]["body"]["model"] == "test-model"


def test_next_number(tmp_path):
    assert next_number(tmp_path) == 1
    for name in ("0002-a.json", "0011-b.json", "notes.json", "0099-c.txt"):
        (tmp_path / name).write_text("")
    assert next_number(tmp_path) == 12


# -- resolve_llm ------------------------------------------------------------------------


@pytest.mark.parametrize("llm", ["offline", "OFFLINE", "none"])
def test_offline(llm):
    assert resolve_llm(llm, env={"DEEPSEEK_API_KEY": "k"}) is None


def test_no_llm_and_no_key_is_offline():
    assert resolve_llm(None, env={}) is None


def test_deepseek_preset_with_its_key():
    env = {"DEEPSEEK_API_KEY": "ds-key"}
    s = resolve_llm("deepseek", env=env)
    assert (s.provider, s.base_url, s.model) == ("deepseek", PRESETS["deepseek"]["base_url"],
                                                 "deepseek-chat")
    assert api_key(s, env) == "ds-key"
    assert "ds-key" not in repr(s) and "ds-key" not in json.dumps(s.record())


def test_arx_api_key_comes_first():
    env = {"ARX_API_KEY": "arx", "OPENAI_API_KEY": "oa"}
    assert api_key(resolve_llm("openai", env=env), env) == "arx"


def test_missing_key_names_the_variable():
    with pytest.raises(LLMError, match="needs an API key") as info:
        resolve_llm("deepseek", env={"OPENAI_API_KEY": "x"})
    assert "DEEPSEEK_API_KEY" in info.value.hint and "ARX_API_KEY" in info.value.hint


def test_key_alone_selects_a_provider():
    assert resolve_llm(None, env={"DEEPSEEK_API_KEY": "k"}).provider == "deepseek"
    assert resolve_llm(None, env={"OPENAI_API_KEY": "k"}).provider == "openai"
    assert resolve_llm(None, env={"ARX_LLM": "vllm"}).provider == "vllm"


@pytest.mark.parametrize(("name", "port"), [("ollama", 11434), ("vllm", 8000),
                                            ("llamacpp", 8080)])
def test_local_presets_need_no_key(name, port):
    s = resolve_llm(name, model="qwen", env={})
    assert s.base_url == f"http://localhost:{port}/v1" and s.model == "qwen"
    assert api_key(s, {}) == DUMMY_KEY


def test_base_urls():
    local = resolve_llm("http://127.0.0.1:9999/v1/", env={})
    assert (local.provider, local.base_url, local.model) == ("local", "http://127.0.0.1:9999/v1",
                                                             "")
    with pytest.raises(LLMError, match="needs an API key"):
        resolve_llm("https://llm.example.com/v1", env={})
    remote = resolve_llm("https://llm.example.com/v1", model="big", env={"ARX_API_KEY": "k"})
    assert remote.provider == "custom" and remote.model == "big"


def test_toml_overrides():
    table = {"provider": "deepseek", "model": "deepseek-reasoner", "timeout_s": 30,
             "max_retries": 2, "temperature": 0.2, "json_mode": False, "max_tokens": 512,
             "price": {"input": 0.28, "output": 0.42}, "api_key_env": "MY_KEY"}
    s = resolve_llm(None, env={"MY_KEY": "k"}, overrides=table)
    assert (s.model, s.timeout_s, s.max_retries, s.temperature) == ("deepseek-reasoner", 30, 2,
                                                                    0.2)
    assert (s.json_mode, s.max_tokens, s.price_in, s.price_out) == (False, 512, 0.28, 0.42)
    assert s.api_key_env[0] == "MY_KEY"
    # a flag naming another provider keeps the tuning but not the table's model
    other = resolve_llm("openai", env={"OPENAI_API_KEY": "k"}, overrides=table)
    assert other.model == "gpt-4o-mini" and other.timeout_s == 30
    assert resolve_llm("deepseek", model="flag-model", env={"MY_KEY": "k"},
                       overrides=table).model == "flag-model"


def test_secret_names_are_every_name_a_key_may_be_read_from(tmp_path):
    presets = secret_names()
    assert presets[0] == "ARX_API_KEY" and {"OPENAI_API_KEY", "DEEPSEEK_API_KEY"} <= set(presets)
    assert secret_names({"api_key_env": "MY_KEY"}) == (*presets, "MY_KEY")
    assert secret_names({"api_key_env": ["A", "ARX_API_KEY", "B"]}) == (*presets, "A", "B")
    with pytest.raises(ConfigError, match="api_key_env"):
        secret_names({"api_key_env": 5})
    # read from arx.toml whatever the provider, offline included: the key is there either way
    (tmp_path / "arx.toml").write_text('[llm]\nprovider = "offline"\napi_key_env = "MY_KEY"\n')
    assert secret_names_in(tmp_path)[-1] == "MY_KEY"
    (tmp_path / "arx.toml").write_text("[run]\n")
    assert secret_names_in(tmp_path) == presets


@pytest.mark.parametrize(("table", "match"), [
    ({"api_key": "sk-x"}, "must not hold an API key"),
    ({"retries": 3}, "unknown key"),
    ({"timeout_s": "soon"}, "timeout_s"),
    ({"max_retries": 1.5}, "max_retries"),
    ({"json_mode": "yes"}, "json_mode"),
    ({"price": {"in": 1}}, "price"),
])
def test_bad_toml_tables(table, match):
    with pytest.raises(ConfigError, match=match):
        resolve_llm("ollama", env={}, overrides=table)


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="neither a preset nor a base URL"):
        resolve_llm("gpt5", env={})


def test_public_url_drops_credentials():
    assert public_url("https://u:pw@host:8443/v1") == "https://host:8443/v1"
    assert public_url("http://localhost:8000/v1") == "http://localhost:8000/v1"
