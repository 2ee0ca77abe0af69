"""One exception hierarchy for arx.

Every failure a user can cause or fix is an ``ArxError`` subclass whose message says what went
wrong and, in ``hint``, what to do about it. Only ``arx.cli`` turns these into click errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ArxError(Exception):
    """Root of all arx errors. ``hint`` names the flag, file or command that fixes it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(ArxError):
    """arx.toml, a flag or an ARX_* variable is missing or malformed."""


class RepoError(ArxError):
    """The managed git repository is in a state arx cannot safely act on."""


class RunLockedError(RepoError):
    """Another arx process holds the run's lock."""


class PatchError(ArxError):
    """A libcst patch matched zero or several targets, or produced invalid code."""


class ProposalError(ArxError):
    """A proposal was refused by the parameter space. ``reason`` is a short machine code."""

    def __init__(self, message: str, reason: str, hint: str | None = None):
        super().__init__(message, hint)
        self.reason = reason


class TraceError(ArxError):
    """A run's trace is missing, corrupt, or from an incompatible arx version."""


class RunnerLoadError(ArxError):
    """The managed runner module failed to import or lacks the Runner contract."""


class LLMError(ArxError):
    """The LLM endpoint failed permanently or returned something unusable."""


class RunError(ArxError):
    """The run cannot go on (baseline failed, proposer gone, runner broken); it is resumable."""


class ExportError(ArxError):
    """An Optuna storage (`arx export`, `arx run --storage`) cannot be opened or written, or
    holds another run under the same study name."""


def close_hint(name: str, names: Iterable[str]) -> str:
    """`` (did you mean A, B?)`` for a misspelt ``name`` among ``names``; "" when none is close."""
    close = difflib.get_close_matches(name, list(names), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""
