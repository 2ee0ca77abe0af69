"""What a child process may see of arx's environment: one rule, ``scrub_env``.

arx holds LLM keys in its environment; the commands it starts do not need them and may log their
environment (a training script printing its config, a crash report). So every child, a trial, a
setup command, an executor's job or the gate's smoke test, gets arx's environment without:

- the known provider variables (``PROVIDER_KEY_ENV``), always;
- the names the caller passes: the variables the run's ``[llm]`` settings read its key from
  (``arx.core.llm.settings.secret_names``; the llm package owns those settings, so execution
  never imports it);
- for untrusted code (the gate runs an LLM-written runner), every variable whose name looks
  secret (contains one of ``SECRET_MARKERS``, in any case).

The runner worker and the gate's smoke test get no such deny-list (a secret's name need not
look secret: ``DATABASE_URL``, ``MYSQL_PWD``, ``SENTRY_DSN``): ``allowed_env`` builds their
environment from an allow-list, ``ALLOWED_ENV`` and the locale's ``LC_*``, a home of their own
and the variables arx sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: variables that hold an LLM provider's key: never handed to any child process. Every name in
#: the llm presets' ``api_key_env`` is here (a test keeps the two in step).
PROVIDER_KEY_ENV = ("ARX_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY", "ANTHROPIC_API_KEY")
#: a variable whose name contains one of these looks secret: untrusted code never sees it
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


#: the variables of arx's environment that the runner worker and the gate's smoke test see
ALLOWED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ")


def allowed_env(home: str, extra: Mapping[str, str] = (), *, keep: Iterable[str] = (),
                environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A whole environment from an allow-list: ``ALLOWED_ENV``, ``LC_*`` and the names in
    ``keep`` where ``environ`` (default ``os.environ``) has them, ``HOME`` set to ``home``, then
    ``extra`` (what arx sets, e.g. ``PYTHONHASHSEED``). Nothing else of the user's."""
    source = os.environ if environ is None else environ
    names = {*ALLOWED_ENV, *keep}
    env = {name: value for name, value in source.items()
           if name in names or name.startswith("LC_")}
    env["HOME"] = home
    env.update(dict(extra))
    return env


def looks_secret(name: str) -> bool:
    """Whether the variable ``name`` looks like it holds a secret (``GITHUB_TOKEN``, ``db_password``)."""
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def scrub_env(drop: Iterable[str] = (), *, untrusted: bool = False,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) as a child process may see it: a new dict without
    ``PROVIDER_KEY_ENV``, without the names in ``drop``, and, when ``untrusted``, without every
    name that ``looks_secret``. The caller adds its own variables to the result."""
    dropped = {*PROVIDER_KEY_ENV, *drop}
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items()
            if name not in dropped and not (untrusted and looks_secret(name))}
