"""A runner imported into the test process, for unit tests of trusted code (the template and the
built-in catalog) that call its hooks with partial contexts.

arx itself never does this: the engine and the gate run the runner in a sandboxed worker
(``arx.core.levels.policy``). Only tests, which trust what they load, use ``load_runner``.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_counter = itertools.count()


def load_runner(path: Path, config: Mapping[str, Any]) -> Any:
    """Import ``path`` afresh and return ``Runner(config)``."""
    name = f"test_runner_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.Runner(dict(config))
