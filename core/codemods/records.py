"""The records the codemods return: a parameter (``Constant``), a value skipped and why
(``Skipped``), and what a scan of a target found (``Scan``). One floor below the modules that
find them (``constants.py`` for Python scripts, ``configfiles.py`` for YAML/TOML/JSON), which
both build them; ``constants`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from arx.core.codemods.guards import Condition

__all__ = ["CONSTANT", "Constant", "Scan", "Skipped"]

#: the surface of a top-level ``NAME = literal``
CONSTANT = "constant"


@dataclass(frozen=True)
class Constant:
    """A literal value of the target that a proposal may change (one parameter)."""

    name: str
    #: the Python value: int, float, bool, str, None, tuple or list (nested containers allowed)
    value: object
    #: 'int', 'float', 'bool', 'str', 'none', 'tuple' or 'list'
    kind: str
    #: the expression as written, e.g. ``2**19``
    source: str
    #: the annotation as written, e.g. ``int`` for ``X: int = 3``
    annotation: str | None
    line: int
    #: the trailing comment of the line, without ``#``, stripped (argparse: the ``help=``)
    comment: str | None
    #: where it lives: CONSTANT, ARGPARSE, FIELD, DICT, CALL, DEFAULT, or a config file's format
    surface: str = CONSTANT
    #: the values the script itself allows (argparse ``choices=``)
    choices: tuple | None = None


@dataclass(frozen=True)
class Skipped:
    """A value that looks like a setting but that arx cannot rewrite safely, and why."""

    name: str
    line: int
    reason: str


@dataclass(frozen=True)
class Scan:
    """What ``scan_parameters`` found in a script."""

    found: tuple[Constant, ...]
    skipped: tuple[Skipped, ...]
    #: where else the script reads settings from (``sources.config_sources``)
    sources: tuple[str, ...]
    #: string literals that could be paths (what ``arx init`` looks for in the checkout)
    strings: tuple[str, ...] = ()
    #: argparse option -> the conditions in effect at each place it is read (``guards.py``)
    guards: Mapping[str, tuple[tuple[Condition, ...], ...]] = field(default_factory=dict)
