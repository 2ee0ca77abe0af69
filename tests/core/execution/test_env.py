"""scrub_env: the one rule for what a child process may see of arx's environment."""

from __future__ import annotations

import os

from arx.core.execution.env import PROVIDER_KEY_ENV, allowed_env, looks_secret, scrub_env
from arx.core.llm.settings import PRESETS, secret_names

ENVIRON = {
    "PATH": "/usr/bin", "HOME": "/home/u", "ARX_HOME": "kept", "CUDA_VISIBLE_DEVICES": "0",
    "ARX_API_KEY": "k1", "OPENAI_API_KEY": "k2", "DEEPSEEK_API_KEY": "k3",
    "ANTHROPIC_API_KEY": "k4", "MY_LLM_KEY": "planted", "MY_LLM_CREDS": "planted",
    "GITHUB_TOKEN": "t", "aws_secret": "s", "DB_PASSWORD": "p", "MY_KEYRING": "r",
}


def test_provider_keys_are_always_dropped_and_named_ones_too():
    env = scrub_env(environ=ENVIRON)
    assert not set(PROVIDER_KEY_ENV) & set(env)
    assert env["MY_LLM_KEY"] == "planted"  # only what is named goes: trusted children keep
    assert env["GITHUB_TOKEN"] == "t"  # their tokens (a training script may need HF_TOKEN)
    env = scrub_env(("MY_LLM_KEY", "MY_LLM_CREDS"), environ=ENVIRON)
    assert not {"MY_LLM_KEY", "MY_LLM_CREDS"} & set(env)
    assert env == {k: v for k, v in ENVIRON.items()
                   if k not in (*PROVIDER_KEY_ENV, "MY_LLM_KEY", "MY_LLM_CREDS")}


def test_untrusted_code_also_loses_every_name_that_looks_secret():
    env = scrub_env(("MY_LLM_CREDS",), untrusted=True, environ=ENVIRON)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "ARX_HOME": "kept",
                   "CUDA_VISIBLE_DEVICES": "0"}
    assert looks_secret("hf_token") and looks_secret("MY_KEYRING") and not looks_secret("HOME")


def test_the_default_is_this_process_environment_and_a_new_dict(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted")
    monkeypatch.setenv("ARX_TEST_VISIBLE", "yes")
    env = scrub_env()
    assert "OPENAI_API_KEY" not in env and env["ARX_TEST_VISIBLE"] == "yes"
    env["ARX_TEST_VISIBLE"] = "changed"
    assert os.environ["ARX_TEST_VISIBLE"] == "yes"


def test_every_llm_preset_key_is_a_known_provider_key():
    """The llm package owns the presets, execution the rule: the two lists stay in step."""
    preset_names = {n for preset in PRESETS.values() for n in preset["api_key_env"]}
    assert preset_names <= set(PROVIDER_KEY_ENV)
    assert set(secret_names()) <= set(PROVIDER_KEY_ENV)


def test_the_allow_list_keeps_the_path_and_locale_and_nothing_that_merely_looks_harmless():
    environ = {"PATH": "/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "HOME": "/home/u",
               "DATABASE_URL": "postgres://u:pw@h/db", "MYSQL_PWD": "pw", "SENTRY_DSN": "x",
               "PYTHONPATH": "/src", "LD_PRELOAD": "/evil.so"}
    env = allowed_env("/tmp/w", {"PYTHONHASHSEED": "0"}, environ=environ)
    assert env == {"PATH": "/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "HOME": "/tmp/w",
                   "PYTHONHASHSEED": "0"}
    assert allowed_env("/h", keep=("PYTHONPATH",), environ=environ)["PYTHONPATH"] == "/src"
