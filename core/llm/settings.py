"""Which LLM to ask, and how: ``--llm``/``--model``, the environment and arx.toml's ``[llm]``.

``resolve_llm`` turns them into ``LLMSettings`` (or None: the offline proposer). Settings hold the
names of the variables that hold a key, never a key; ``api_key`` reads one when a client is made.
``secret_names`` lists every such name, so that no child process arx starts is handed them
(``arx.core.execution.env.scrub_env``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from arx.core.config import load_toml, plain
from arx.core.errors import ConfigError, LLMError

#: ``--llm`` names. ``model`` "" means: ask the server (``GET /models``) and use its first model.
PRESETS: dict[str, dict] = {
    "deepseek": {"base_url": "https://api.deepseek.com", "model": "deepseek-chat",
                 "api_key_env": ("ARX_API_KEY", "DEEPSEEK_API_KEY")},
    "openai": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
               "api_key_env": ("ARX_API_KEY", "OPENAI_API_KEY")},
    "ollama": {"base_url": "http://localhost:11434/v1", "model": "", "api_key_env": ("ARX_API_KEY",)},
    "vllm": {"base_url": "http://localhost:8000/v1", "model": "", "api_key_env": ("ARX_API_KEY",)},
    "llamacpp": {"base_url": "http://localhost:8080/v1", "model": "",
                 "api_key_env": ("ARX_API_KEY",)},
}
OFFLINE = ("offline", "none", "")
#: the ``[llm]`` keys of arx.toml (``price`` is a table: ``input``/``output`` USD per 1M tokens)
OVERRIDE_KEYS = ("provider", "base_url", "model", "api_key_env", "timeout_s", "max_retries",
                 "backoff_s", "max_backoff_s", "temperature", "max_tokens", "json_mode", "price")
_TUNING_KEYS = ("timeout_s", "max_retries", "backoff_s", "max_backoff_s", "temperature",
                "max_tokens", "json_mode")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
DUMMY_KEY = "arx-local-no-key"


@dataclass(frozen=True)
class LLMSettings:
    """Where and how to ask. Holds the names of key variables, never a key."""

    provider: str
    base_url: str
    model: str
    api_key_env: tuple[str, ...]
    timeout_s: float = 60
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60
    temperature: float = 0.7
    max_tokens: int | None = None
    price_in: float = 0.0  # USD per million prompt tokens
    price_out: float = 0.0  # USD per million completion tokens
    json_mode: bool = True

    @property
    def is_local(self) -> bool:
        return (urlsplit(self.base_url).hostname or "") in LOCAL_HOSTS

    def record(self) -> dict[str, Any]:
        """A plain dict for the trace and the run's stored config (no key, no URL password)."""
        return {**asdict(self), "base_url": public_url(self.base_url),
                "api_key_env": list(self.api_key_env)}


def resolve_llm(
    llm: str | None,
    model: str | None = None,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] = {},
) -> LLMSettings | None:
    """Settings from ``--llm``, ``--model``, ``ARX_LLM``/``ARX_MODEL`` and arx.toml's ``[llm]``.

    Precedence: arguments, then the environment, then ``overrides`` (the ``[llm]`` table). With
    no provider anywhere, a key in ``ARX_API_KEY``/``DEEPSEEK_API_KEY`` selects deepseek and one
    in ``OPENAI_API_KEY`` selects openai; no key at all means offline (None).
    """
    overrides = dict(overrides)
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if any(k in ("api_key", "key", "token") for k in unknown):
        raise ConfigError("arx.toml must not hold an API key",
                          hint="remove it from [llm] and set ARX_API_KEY in the environment")
    if unknown:
        raise ConfigError(f"unknown key(s) in [llm] of arx.toml: {', '.join(unknown)}",
                          hint=f"known keys: {', '.join(OVERRIDE_KEYS)}")
    table_provider = str(overrides.get("provider") or "").strip()
    choice = _first(llm, env.get("ARX_LLM"), table_provider)
    if choice is None:
        if _first(env.get("ARX_API_KEY"), env.get("DEEPSEEK_API_KEY")):
            choice = "deepseek"
        elif _first(env.get("OPENAI_API_KEY")):
            choice = "openai"
        else:
            return None
    choice = choice.strip()
    if choice.lower() in OFFLINE:
        return None
    # the table's model and URL belong to the table's provider, not to one chosen by a flag
    table_applies = not table_provider or table_provider.lower() == choice.lower()
    if choice.lower() in PRESETS:
        provider, base = choice.lower(), dict(PRESETS[choice.lower()])
    elif re.match(r"https?://", choice):
        provider = "local" if _host(choice) in LOCAL_HOSTS else "custom"
        base = {"base_url": choice.rstrip("/"), "model": "", "api_key_env": ("ARX_API_KEY",)}
    else:
        raise ConfigError(f"--llm {choice!r} is neither a preset nor a base URL",
                          hint=f"use offline, {', '.join(PRESETS)} or http(s)://host/v1")
    if table_applies and overrides.get("base_url"):
        base["base_url"] = str(overrides["base_url"]).rstrip("/")
    base["model"] = _first(model, env.get("ARX_MODEL"),
                           overrides.get("model") if table_applies else None) or base["model"]
    if overrides.get("api_key_env"):
        names = _key_names(overrides)
        base["api_key_env"] = tuple(dict.fromkeys((*names, *base["api_key_env"])))
    price = overrides.get("price") or {}
    if not isinstance(price, Mapping) or set(price) - {"input", "output"}:
        raise ConfigError("[llm.price] takes input and output (USD per million tokens)")
    try:
        settings = LLMSettings(
            provider=provider, **base,
            **{k: _num(k, overrides[k]) for k in _TUNING_KEYS if k in overrides},
            price_in=float(price.get("input", 0.0)), price_out=float(price.get("output", 0.0)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[llm] in arx.toml: {exc}") from None
    if api_key(settings, env) is None:
        raise LLMError(f"--llm {provider} needs an API key and none is set",
                       hint=f"set {' or '.join(settings.api_key_env)} in the environment "
                            "(or use --llm offline)")
    return settings


def api_key(settings: LLMSettings, env: Mapping[str, str] = os.environ) -> str | None:
    """The first non-empty key among ``settings.api_key_env``; a dummy for local servers."""
    for name in settings.api_key_env:
        if env.get(name, "").strip():
            return env[name].strip()
    return DUMMY_KEY if settings.is_local else None


def secret_names(llm_table: Mapping[str, Any] = {}) -> tuple[str, ...]:
    """Every variable an LLM key may be read from: the presets' (``ARX_API_KEY``,
    ``DEEPSEEK_API_KEY``, ...) and those ``api_key_env`` of arx.toml's ``[llm]`` table
    (``llm_table``) names. Child processes are never handed these. Offline runs need them too:
    the key is in the environment either way."""
    names = ["ARX_API_KEY", *(n for preset in PRESETS.values() for n in preset["api_key_env"])]
    return tuple(dict.fromkeys([*names, *_key_names(llm_table)]))


def secret_names_in(root: Path) -> tuple[str, ...]:
    """``secret_names`` of the ``[llm]`` table in ``root``'s arx.toml."""
    return secret_names(plain(load_toml(root).get("llm", {})))


def _key_names(table: Mapping[str, Any]) -> tuple[str, ...]:
    """The names ``api_key_env`` of an ``[llm]`` table gives: one name or a list of names."""
    names = table.get("api_key_env") or ()
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"[llm] api_key_env in arx.toml must be a variable name or a list of "
                          f"names, not {names!r}", hint='e.g. api_key_env = "MY_LLM_KEY"')
    return tuple(names)



def public_url(url: str) -> str:
    """``url`` without user:password, for messages and records."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and str(v).strip() != "":
            return v
    return None


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def _num(key: str, value: Any) -> Any:
    if key == "json_mode":
        if not isinstance(value, bool):
            raise ValueError(f"json_mode must be true or false, not {value!r}")
        return value
    if key in ("max_retries", "max_tokens"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, not {value!r}")
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or number < 0:
        raise ValueError(f"{key} must be a non-negative number, not {value!r}")
    return number
