"""Level 2 mechanisms: structured patches to the managed runner, and the built-in catalog.

A mechanism is a short list of ``MechanismPatch`` records applied in order to ``runner/runner.py``,
usually a helper class plus a ``modify_init`` that puts an instance in ``self.mechanisms`` (its
integration). The four kinds are the paper's (new helper class, new method, replaced method,
extended ``__init__``); free-form diffs are refused. The patch file format is one JSON object::

    {"kind": "new_helper_class", "name": "TabuList", "target": null,
     "code": "class TabuList: ...", "domain": "combinatorial optimization"}

and a mechanism file (``runner_repo/catalog/*.json``, or what a Level-2 Generate round returns)
is ``{"name", "domain", "description", "patches": [patch, ...]}``.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from arx.core.codemods.runner_patch import (
    add_helper_class,
    add_method,
    extend_init,
    method_name,
    replace_method,
)
from arx.core.errors import PatchError

__all__ = [
    "KINDS",
    "Mechanism",
    "MechanismPatch",
    "apply_patch",
    "apply_patches",
    "catalog",
    "load_catalog",
    "new_method_names",
]

KINDS = ("new_helper_class", "new_method", "replace_method", "modify_init")
_FIELDS = {"kind", "name", "target", "code", "domain"}


def _identifier(value: object) -> bool:
    """An ASCII Python identifier, not a keyword: Python folds other names by NFKC (a
    fullwidth ``Ｔａｂｕ`` is the class ``Tabu``), so one name could stand for another's."""
    return isinstance(value, str) and value.isascii() and value.isidentifier() \
        and not keyword.iskeyword(value)


def _load(obj_or_text: object, what: str) -> Any:
    if isinstance(obj_or_text, bytes):
        try:
            obj_or_text = obj_or_text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PatchError(f"the {what} is not UTF-8 text (byte {e.start}: "
                             f"{obj_or_text[e.start:e.start + 1]!r})",
                             hint="save the patch file as UTF-8") from None
    if isinstance(obj_or_text, str):
        try:
            return json.loads(obj_or_text)
        except ValueError as e:
            raise PatchError(f"the {what} is not valid JSON: {e}") from None
    return obj_or_text


@dataclass(frozen=True)
class MechanismPatch:
    """One structured change to the runner. ``target`` is set for ``replace_method`` only."""

    #: one of ``KINDS``
    kind: str
    #: the mechanism's name, a CamelCase identifier (the helper class's name)
    name: str
    #: the Runner method a ``replace_method`` patch replaces; None otherwise
    target: str | None
    #: Python source: a class, a ``def``, or statements for ``__init__``
    code: str
    #: the field it comes from, e.g. "combinatorial optimization" (for the commit subject)
    domain: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PatchError(
                f"unknown patch kind {self.kind!r}; a runner patch is one of {', '.join(KINDS)}",
                hint="free-form diffs are refused: use a structured patch",
            )
        if not _identifier(self.name) or not self.name[0].isupper():
            raise PatchError(f"mechanism name {self.name!r} is not a CamelCase identifier")
        if self.kind == "replace_method":
            if not _identifier(self.target):
                raise PatchError(f"a replace_method patch needs a method name as target, "
                                 f"got {self.target!r}")
        elif self.kind == "modify_init" and self.target == "__init__":
            object.__setattr__(self, "target", None)  # the method it extends, said outright
        elif self.target not in (None, ""):
            raise PatchError(f"a {self.kind} patch takes no target (got {self.target!r})")
        if not isinstance(self.code, str) or not self.code.strip():
            raise PatchError(f"the {self.kind} patch for {self.name} has no code")
        if not isinstance(self.domain, str):
            raise PatchError(f"domain must be a string, got {self.domain!r}")

    @classmethod
    def from_json(cls, obj_or_text: object) -> MechanismPatch:
        """A patch from its JSON object (or text); ``PatchError`` on anything else."""
        obj = _load(obj_or_text, "patch")
        if not isinstance(obj, Mapping):
            raise PatchError(f"a patch is a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - _FIELDS)
        missing = sorted({"kind", "name", "code"} - set(obj))
        if unknown or missing:
            raise PatchError(
                "a patch has exactly the keys kind, name, target, code (and optional domain)"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        for key in ("kind", "name", "code"):
            if not isinstance(obj[key], str):
                raise PatchError(f"patch field {key!r} must be a string, got {obj[key]!r}")
        target = obj.get("target") or None
        return cls(kind=obj["kind"], name=obj["name"], target=target, code=obj["code"],
                   domain=obj.get("domain") or "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "target": self.target,
                               "code": self.code}
        if self.domain:
            out["domain"] = self.domain
        return out

    def describe(self) -> str:
        """One line, e.g. ``replace_method select (AnnealingAccept)``."""
        what = self.target if self.kind == "replace_method" else self.name
        return f"{self.kind} {what}" + (f" ({self.name})" if what != self.name else "")


@dataclass(frozen=True)
class Mechanism:
    """A named list of patches, as stored in the catalog or returned by a Generate round."""

    name: str
    domain: str
    description: str
    patches: tuple[MechanismPatch, ...]

    @classmethod
    def from_json(cls, obj_or_text: object) -> Mechanism:
        """``{"name", "domain", "description", "patches": [...]}``, a bare list of patches, or
        one patch. Every patch must carry the mechanism's name; ``PatchError`` otherwise."""
        obj = _load(obj_or_text, "mechanism")
        meta: Mapping[str, Any] = {}
        if isinstance(obj, Mapping) and "patches" in obj:
            meta, raw = obj, obj["patches"]
            unknown = sorted(set(obj) - {"name", "domain", "description", "patches"})
            if unknown:
                raise PatchError(f"unknown mechanism field(s): {', '.join(unknown)}")
        elif isinstance(obj, Mapping):
            raw = [obj]
        else:
            raw = obj
        if not isinstance(raw, list) or not raw:
            raise PatchError("a mechanism needs a non-empty list of patches")
        domain = meta.get("domain") or ""
        patches = []
        for item in raw:
            patch = MechanismPatch.from_json(item)
            if domain and not patch.domain:
                patch = MechanismPatch(patch.kind, patch.name, patch.target, patch.code, domain)
            patches.append(patch)
        name = meta.get("name") or patches[0].name
        wrong = sorted({p.name for p in patches if p.name != name})
        if wrong:
            raise PatchError(f"every patch of mechanism {name!r} must be named {name!r}; "
                             f"got {', '.join(wrong)}")
        return cls(name=name, domain=domain or patches[0].domain,
                   description=str(meta.get("description") or ""), patches=tuple(patches))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "domain": self.domain, "description": self.description,
                "patches": [{k: v for k, v in p.to_json().items() if k != "domain"}
                            for p in self.patches]}


def apply_patch(runner_source: str, patch: MechanismPatch) -> str:
    """``runner_source`` with ``patch`` applied (libcst). ``PatchError``, nothing changed, when
    the target is missing or matched more than once, a name is taken, or the code is not of the
    patch's kind."""
    if not isinstance(patch, MechanismPatch):
        raise PatchError(f"not a MechanismPatch: {patch!r}")
    try:
        if patch.kind == "new_helper_class":
            return add_helper_class(runner_source, patch.code, patch.name)
        if patch.kind == "new_method":
            return add_method(runner_source, patch.code)
        if patch.kind == "replace_method":
            return replace_method(runner_source, str(patch.target), patch.code)
        return extend_init(runner_source, patch.code)
    except PatchError as e:
        raise PatchError(f"{patch.describe()}: {e.message}", hint=e.hint) from None


def apply_patches(runner_source: str, patches: Iterable[MechanismPatch]) -> str:
    """All ``patches`` applied in order; the first refusal raises and nothing is returned."""
    for patch in patches:
        runner_source = apply_patch(runner_source, patch)
    return runner_source


def new_method_names(patches: Sequence[MechanismPatch]) -> tuple[str, ...]:
    """Runner methods the patches add: the gate checks the drive reaches each (integration)."""
    names = []
    for patch in patches:
        if patch.kind == "new_method":
            names.append(method_name(patch.code))
    return tuple(names)


#: run-rules revisions whose catalog replaces some mechanisms (``catalog/rules<N>/``), newest
#: last: rules 7's TabuList also refuses a configuration measured before (an undo)
CATALOG_REVISIONS = (7,)


def catalog(rules: int = 1) -> list[Mechanism]:
    """The built-in mechanisms (``arx.runner_repo/catalog/*.json``), sorted by file name; for a
    run with ``rules`` >= N, a mechanism of ``catalog/rules<N>/`` replaces the one of the same
    name, so a run replays with the code its rules installed."""
    root = files("arx.runner_repo").joinpath("catalog")
    out = _read_folder(root, "catalog")
    for revision in CATALOG_REVISIONS:
        if rules >= revision:
            newer = {m.name: m for m in _read_folder(root.joinpath(f"rules{revision}"),
                                                     f"catalog/rules{revision}")}
            out = [newer.get(m.name, m) for m in out]
    return out


def _read_folder(folder: Any, where: str) -> list[Mechanism]:
    entries = sorted((p for p in folder.iterdir() if p.name.endswith(".json")),
                     key=lambda p: p.name)
    out = []
    for entry in entries:
        try:
            out.append(Mechanism.from_json(entry.read_text(encoding="utf-8")))
        except PatchError as e:
            raise PatchError(f"{where}/{entry.name}: {e.message}") from None
    return out


def load_catalog() -> list[list[MechanismPatch]]:
    """The built-in mechanisms, each a list of patches applied in order."""
    return [list(mech.patches) for mech in catalog()]
