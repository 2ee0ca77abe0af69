"""Which active mechanism a run-time fault of the runner is blamed on.

The worker says what it can (``MechanismFault``): the mechanism object whose hook was running,
the runner frames of the traceback, the mechanism hooks the call went through. ``responsible``
reads that against the run's active mechanisms (``mechanism_state``), most precise first:

1. the mechanism the worker named (its hook raised, hung, exited, or gave the answer that was
   invalid or emptied every candidate list);
2. the innermost runner frame that belongs to a mechanism: a method of its class, a line that
   names it (``self.mechanisms.append(Name())``), or a Runner method its patches added or
   replaced (``methods`` of its ``level2`` event, see ``patched_methods``);
3. the newest mechanism that added or replaced the Runner hook that failed (``__init__`` for a
   runner that does not construct);
4. the newest mechanism named anywhere in the error, else the newest active one.

All of that comes from the worker, where the mechanism's own code ran: a mechanism can rename
its class, forge a traceback or write a fault line of its own. So with two or more active
mechanisms ``observed`` treats it as a hint only: it takes each mechanism out in turn (the
hinted one first, then newest to oldest; ``GitRepo.file_without``) and asks the same call again
on a fresh worker (``MechanismFault.retry``). The first whose removal makes the call succeed is
the one reverted (``how``: ``observed``); when none does (they fail together, or the fault
cannot be retried: a slow runner), the hint stands (``reported``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from arx.core.codemods.runner_patch import method_name
from arx.core.levels.mechanism import MechanismPatch
from arx.core.levels.mechanism_state import MechanismRecord
from arx.core.levels.worker import MechanismFault

__all__ = ["observed", "patched_methods", "responsible"]


def patched_methods(patches: Iterable[MechanismPatch]) -> list[str]:
    """The Runner methods a mechanism's patches add (``new_method``), replace
    (``replace_method``) or extend (``modify_init``: ``__init__``), in patch order."""
    out: list[str] = []
    for patch in patches:
        name = {"new_method": lambda p: method_name(p.code),
                "replace_method": lambda p: str(p.target),
                "modify_init": lambda p: "__init__"}.get(patch.kind, lambda p: None)(patch)
        if name and name not in out:
            out.append(name)
    return out


def _methods(mech: MechanismRecord) -> Sequence[str]:
    methods = mech.event.get("methods")
    return [m for m in methods if isinstance(m, str)] if isinstance(methods, list) else []


def _named(text: str, active: Sequence[MechanismRecord]) -> list[MechanismRecord]:
    return [m for m in active if re.search(rf"\b{re.escape(m.name)}\b", text)]


def responsible(fault: MechanismFault, active: Sequence[MechanismRecord]) -> MechanismRecord:
    """The active mechanism to revert for ``fault`` (``active``: oldest activation first, not
    empty)."""
    by_name = {m.name: m for m in active}
    if fault.mechanism in by_name:
        return by_name[fault.mechanism]
    for qualname, line in reversed(fault.frames):
        owner, _, method = qualname.rpartition(".")
        if owner.split(".")[0] in by_name:
            return by_name[owner.split(".")[0]]
        if qualname in by_name:  # a class body
            return by_name[qualname]
        named = _named(line, active)
        if named:
            return named[-1]
        owners = [m for m in active if owner == "Runner" and method in _methods(m)]
        if owners:
            return owners[-1]
    hook = "__init__" if fault.kind == "load" and fault.hook == "load" else fault.hook
    owners = [m for m in active if hook in _methods(m)]
    if owners:
        return owners[-1]
    named = _named(fault.error, active)
    return (named or list(active))[-1]


def observed(fault: MechanismFault, active: Sequence[MechanismRecord],
             without: Callable[[MechanismRecord], str | None]) -> tuple[MechanismRecord, str]:
    """The mechanism to revert and how that was known: ``only`` (the one active), ``observed``
    (the call succeeds with it taken out: ``without`` gives the runner source without it, None
    when it cannot be taken out alone) or ``reported`` (the worker's account, ``responsible``)."""
    hint = responsible(fault, active)
    if len(active) == 1:
        return hint, "only"
    if fault.retry is None:
        return hint, "reported"
    for mech in [hint, *(m for m in reversed(active) if m is not hint)]:
        source = without(mech)
        if source is not None and not fault.retry(source):
            return mech, "observed"
    return hint, "reported"
