"""The words arx writes into traces and commits, as enums: one place, so no module compares bare
strings and a typo is an AttributeError instead of a silent mismatch.

Every ``value`` here is public surface (trace fields, commit trailers, `arx ... --json`): existing
run branches are read with them, so a value is never renamed, only added.
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """A str enum that prints and formats as its value (as ``enum.StrEnum`` does on 3.11+), so
    an f-string never writes ``TrialState.KEEP`` into a trace, a log or a commit."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class TrialState(_Word):
    """Outcome of one trial record (trace field ``status``)."""

    BASELINE = "baseline"
    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"
    FAIL = "fail"
    NAN = "nan"
    NO_METRIC = "no_metric"
    TIMEOUT = "timeout"
    INVALID = "invalid_proposal"
    INTERRUPTED = "interrupted"
    CONFIRM = "confirm"
    REBASELINE = "rebaseline"
    NOISE = "noise"  # an extra measurement of the baseline, to measure the metric's spread
    NO_EFFECT = "no_effect"  # measured, and equal to the best to the last printed digit
    CONTENDED = "contended"  # ran without the machine the baseline had: never compared
    VERIFY = "verify"  # a held-out measurement of the baseline or the best (decides nothing)
    PRUNED = "pruned"  # stopped early: its learning curve trailed the best's (never kept)

    @property
    def is_measured(self) -> bool:
        """Its metric is usable."""
        return self in (self.BASELINE, self.KEEP, self.DISCARD, self.CONFIRM, self.REBASELINE,
                        self.NOISE, self.NO_EFFECT, self.VERIFY)

    @property
    def is_failure(self) -> bool:
        return self in (self.CRASH, self.FAIL, self.NAN, self.NO_METRIC, self.TIMEOUT)

    @property
    def is_best(self) -> bool:
        """The record's config became the best (the baseline, or a keep)."""
        return self in (self.BASELINE, self.KEEP)


#: status values (as written in the trace) whose metric is usable / that are failed trials
MEASURED = frozenset(s.value for s in TrialState if s.is_measured)
FAILED = frozenset(s.value for s in TrialState if s.is_failure)


class TrialKind(_Word):
    """What a trace record measured (trace field ``kind``)."""

    BASELINE = "baseline"
    TRIAL = "trial"
    CONFIRM = "confirm"  # an extra seed of a would-be keep or of the best
    REBASELINE = "rebaseline"  # the best re-measured (time mode)
    NOISE = "noise"  # the baseline measured again (another seed, or a repeat) for its spread
    VERIFY = "verify"  # the baseline or the best trained on a held-out seed (no decision used it)


class Event(_Word):
    """What a trace line records (trace field ``event``)."""

    START = "start"  # a trial is about to run (a kill leaves it pending)
    TRIAL = "trial"  # a finished trial record
    LEVEL15 = "level15"  # a Level 1.5 decision
    LEVEL2 = "level2"  # a Level 2 attempt
    NOISE = "noise"  # the measured spread of the metric (see docs/trace.md)
    RESUME = "resume"  # the run was resumed (with what, up to which iteration)
    VERIFY = "verify"  # the held-out verification of a run's result (see docs/trace.md)
    STEP_ASIDE = "step_aside"  # a Level-2 cycle that added nothing: the search was progressing


class Occasion(_Word):
    """Why a line of ``runs/<name>/provenance.jsonl`` was written (field ``event``)."""

    START = "start"  # `arx run` started the run
    RESUME = "resume"  # `arx run --resume` continued it


class RunState(_Word):
    """Where a run stands (`arx status`): derived from its lock, its commits and its trace."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class Level(_Word):
    """Which part of arx made a commit (trailer ``Arx-Level``)."""

    INIT = "init"
    BASELINE = "baseline"
    L1 = "1"
    L15 = "1.5"
    L2 = "2"
    END = "end"
    VERIFY = "verify"  # `arx verify`: a held-out verification after the run ended


class Group(_Word):
    """Which levels a run uses (``--group``): the paper's groups, plus D (catalog-only Level 2)."""

    A = "A"  # Level 1
    B = "B"  # + Level 1.5
    C = "C"  # + Level 2 (LLM-generated mechanisms; the catalog when offline)
    D = "D"  # + Level 2 from the built-in catalog only

    @classmethod
    def of(cls, text: str) -> Group:
        return cls(str(text).strip().upper())

    @property
    def has_level15(self) -> bool:
        return self is not Group.A

    @property
    def has_level2(self) -> bool:
        return self in (Group.C, Group.D)

    @property
    def level2_uses_llm(self) -> bool:
        """Whether Level 2 asks the LLM (when there is one); otherwise it draws the catalog."""
        return self is Group.C


class Verdict(_Word):
    """What happened to one Level-2 attempt (trace ``level2`` event, field ``verdict``)."""

    PASS = "pass"  # passed the gate: committed and active
    FAIL = "fail"  # failed the gate: committed, then reverted
    REFUSED = "refused"  # the patch could not be applied (or no usable answer): nothing written
    RUNTIME_REVERT = "runtime_revert"  # was active, failed at run time, reverted
    NO_BENEFIT = "no_benefit"  # was active, did no better than before it (outcome gate), reverted
    KEPT = "kept"  # was active, did better than before it (outcome gate): stays


class MechanismState(_Word):
    """Where a mechanism stands now on a run's branch (`arx status`, `arx mechanism list`)."""

    ACTIVE = "active"
    REVERTED = "reverted"  # a revert undid it (the gate, run time, or no measured benefit)
    REFUSED = "refused"  # it never reached the runner


class Source(_Word):
    """Where a mechanism came from (trailer ``Arx-Source``, trace field ``source``)."""

    LLM = "llm"
    LLM_REPAIR = "llm-repair"
    CATALOG = "catalog"
    MANUAL = "manual"
