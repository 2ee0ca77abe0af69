"""``--executor local|ray``: which executor runs a run's parallel trials."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from arx.core.errors import ConfigError
from arx.core.execution.executor import Executor
from arx.core.execution.local import LocalExecutor, detect_gpus


def make_executor(kind: str, workdir: Path, slots: int | None = 1, address: str | None = None,
                  *, log_dir: Path | None = None, pid_dir: Path | None = None,
                  gpus: Sequence[str] | None | str = "auto", num_cpus: float = 1,
                  num_gpus: float = 0, runtime_env: Mapping | None = None) -> Executor:
    """``--executor local|ray``: the executor to run a run's trials with.

    local: ``slots`` (default 1) subprocesses; ``gpus="auto"`` shares ``detect_gpus()`` among
    them. ray: ``slots`` None or 0 sizes itself to the cluster; ``address`` None starts a local
    Ray instance, "auto" joins the running one; ``num_cpus``/``num_gpus`` per trial.
    """
    if kind == "local":
        if address is not None:
            raise ConfigError("--address is only used with --executor ray",
                              hint="add --executor ray, or drop --address")
        return LocalExecutor(workdir, slots or 1, detect_gpus() if gpus == "auto" else gpus,
                             log_dir=log_dir, pid_dir=pid_dir)
    if kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray, which is not installed",
                              hint='pip install "arx-autoresearch[ray]"') from None
        # imported here: it imports ray, an optional extra that most runs never load
        from arx.core.execution.ray import RayExecutor

        return RayExecutor(address=address, slots=slots or None, num_cpus=num_cpus,
                           num_gpus=num_gpus, runtime_env=runtime_env, log_dir=log_dir)
    raise ConfigError(f"unknown executor {kind!r}", hint="use --executor local or --executor ray")

