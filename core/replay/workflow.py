"""The GitHub Actions workflow that replays every pushed ``arx/*`` branch (`arx init --replay-ci`).

The template ships in ``arx.runner_repo`` (``replay.yml``); the installed arx version is pinned
into it, so CI replays a branch with the arx that wrote the workflow.
"""

from __future__ import annotations

from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from arx.core.errors import ConfigError

#: where `arx init --replay-ci` writes the workflow in a managed repository
REPLAY_WORKFLOW_PATH = ".github/workflows/arx-replay.yml"


def replay_workflow_text() -> str:
    """The GitHub Actions workflow that replays every pushed ``arx/*`` branch."""
    try:
        text = resources.files("arx.runner_repo").joinpath("replay.yml").read_text()
    except (FileNotFoundError, OSError):
        raise ConfigError("the replay workflow template (arx/runner_repo/replay.yml) is missing "
                          "from this installation", hint="reinstall arx-autoresearch") from None
    try:
        spec = f"arx-autoresearch=={version('arx-autoresearch')}"
    except PackageNotFoundError:  # pragma: no cover - a bare checkout
        spec = "arx-autoresearch"
    return text.replace("__ARX_PIP_SPEC__", spec)


def write_replay_workflow(root: Path | str, force: bool = False) -> Path:
    """Write the workflow to ``REPLAY_WORKFLOW_PATH`` under ``root`` (not committed); refuses
    to overwrite a different file unless ``force``."""
    path = Path(root) / REPLAY_WORKFLOW_PATH
    text = replay_workflow_text()
    if path.exists() and path.read_text() != text and not force:
        raise ConfigError(f"{path} exists and differs from arx's replay workflow",
                          hint="pass --force to rewrite it, or merge the two by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
