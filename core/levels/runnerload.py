"""Load the managed runner (``runner/runner.py``) from a run's worktree.

The module is imported under a unique name and registered in ``sys.modules`` before it executes
(dataclasses and pickling look it up there). A failure is loud: the paper lost a whole run to a
silent fallback to a default runner, so there is none.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arx.core.errors import RunnerLoadError

HOOKS = ("build_prompt", "focus", "filter_candidates", "select", "confirm_seeds", "accept",
         "observe")
_counter = itertools.count()


def load_runner(path: Path, config: Mapping[str, Any]) -> Any:
    """Import ``path`` afresh and return ``Runner(config)``; RunnerLoadError on any failure."""
    path = Path(path)
    if not path.exists():
        raise RunnerLoadError(f"runner not found at {path}", hint="is this an arx-managed repo?")
    name = f"arx_runner_{path.parent.parent.name}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RunnerLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        cls = getattr(module, "Runner", None)
        if cls is None:
            raise RunnerLoadError(f"{path} defines no class Runner")
        runner = cls(dict(config))
    except RunnerLoadError:
        sys.modules.pop(name, None)
        raise
    except Exception:
        sys.modules.pop(name, None)
        raise RunnerLoadError(
            f"{path} failed to load:\n{traceback.format_exc(limit=-3)}",
            hint="revert the last runner commit on the run branch",
        ) from None
    missing = [h for h in HOOKS if not callable(getattr(runner, h, None))]
    if missing:
        raise RunnerLoadError(f"Runner in {path} lacks hook(s): {', '.join(missing)}")
    return runner
