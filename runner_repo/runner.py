"""The search policy of this run (phi): how proposals are asked for, filtered and accepted.

arx loads this file from the run branch when a run starts or resumes and after every Level-2
change (docs/levels.md has the whole contract). Level 2 rewrites it with structured
patches (a new helper class, a new method, a replaced method, statements appended to __init__),
each one a git commit that can be reverted. Keep it plain Python with standard-library imports
only: it runs in a sandboxed worker process, never inside arx, and the gate refuses the rest.

The engine calls, in order, each iteration:
    build_prompt(ctx) -> str          the text an LLM proposer reads
    focus(ctx) -> list | None         parameters to explore next (the offline proposer obeys it)
    filter_candidates(ctx, cands)     drop or re-rank candidate proposals (dicts)
    select(ctx, cands) -> dict        the one to train
    confirm_seeds(ctx, metric, best)  extra seeds a would-be keep must win on (0 = none)
    accept(ctx, metrics, best_metrics) -> bool
    observe(ctx, record)              see every finished trial (a trace record dict)
and, while a trial trains and prints its learning curve (``--prune on``):
    prune(ctx, curves) -> bool        stop it now? (a pruned trial is never kept)
``curves`` is ``{"curve": [[share, value], ...], "best": [[share, value], ...], "sd": float |
None, "unit": "step" | "s"}``: the trial's points so far and the best's whole curve, progress as a
share of the budget; ``sd`` is the curve's noise measured on the noise trainings (None unknown).
arx asks at a new point once the trial has moved on by 1% of its budget since it last asked.
``ctx`` is a plain dict (built by ``arx.core.loop.context.hook_context``); candidates are
``{"changes": {NAME: value}, "hypothesis": str}`` dicts; ``self.n_candidates`` of them are asked
for. Mechanisms are objects in ``self.mechanisms`` with any of the optional hooks
``extend_prompt(ctx, lines) -> lines``, ``focus(ctx) -> names``, ``filter_candidates(ctx, cands)
-> cands`` and ``observe(ctx, record)``. Their focus is composed (``Runner.focus``): what they
all agree on, else each in turn. From rules 7 a mechanism may also answer ``allows(ctx,
changes) -> bool`` (would its filter let that change through?): a parameter whose every move
(``ctx["moves"]``) some mechanism refuses is never a focus, and the prompt says in one line what
the mechanisms jointly allow (``Runner.allowed_line``).
"""

import math


class Runner:
    """Baseline policy: one candidate; a keep must beat the best by more than the measured noise.

    With a measured spread ``sd`` (``ctx["noise"]``) a candidate that beats the best by at least
    ``confirm_sd`` (in units of sd) is trained on ``noise_seeds`` more seeds (the best on the
    same seeds, once) and kept only if its mean still beats the best's mean by ``mean_keep_sd``;
    one lucky measurement is never a keep. Without a spread (``--noise off``) or with
    ``--confirm N``, the older rules hold: strictly better, or better on N more seeds by
    ``confirm_margin``.
    """

    confirm_sd = 1.0
    noise_seeds = 2
    mean_keep_sd = 2.0
    #: pruning: never before this share of the budget; behind the best's curve by more than
    #: prune_sd curve-noise sds (prune_rel of the best's value when the noise is 0 or unknown)
    #: plus prune_left times what the best still gained from there to its end, and behind the
    #: best's result (``ctx["best_metric"]``) by the same sds, at prune_patience points in a row
    #: (chosen on 116 recorded mlp trials' noisy curves: no keep lost; docs/ablation.md)
    prune_after = 0.15
    prune_sd = 2.0
    prune_rel = 0.02
    prune_left = 0.5
    prune_patience = 3

    def __init__(self, config):
        self.config = dict(config)
        self.direction = self.config.get("direction", "min")
        self.history_size = int(self.config.get("history", 12))
        self.confirm = int(self.config.get("confirm", 0))
        self.confirm_margin = float(self.config.get("confirm_margin", 0.0))
        self.n_candidates = 1
        self.mechanisms = []

    # ---- proposing -------------------------------------------------------------------------
    def build_prompt(self, ctx):
        lines = [
            f"You are tuning the training script `{ctx['target_file']}`; the metric is "
            f"{ctx['metric']} ({'lower' if self.direction == 'min' else 'higher'} is better).",
            f"Baseline {ctx['metric']}: {fmt(ctx['baseline_metric'])}. "
            f"Best so far: {fmt(ctx['best_metric'])} (iteration {ctx['iteration']} of "
            f"{ctx['iterations']}).",
            "",
            "Parameters you may change (current best value, allowed values):",
        ]
        for param in ctx["params"]:
            if param["name"] in ctx["active"]:
                lines.append(f"- {param['name']} = {param['value']!r}   [{param['describe']}]")
        fixed = [p["name"] for p in ctx["params"] if p["name"] not in ctx["active"]]
        if fixed:
            lines.append("Do not change (locked or frozen): " + ", ".join(fixed))
        if ctx.get("guidance"):
            lines += ["", "Guidance: " + ctx["guidance"]]
        focus = self.focus(ctx)
        if focus:
            lines += ["", "Explore these parameters next: " + ", ".join(focus)]
        allowed = self.allowed_line(ctx) if self.composes(ctx) else None
        if allowed:
            lines += ["", allowed]
        recent = ctx["history"][-self.history_size:]
        if recent:
            lines += ["", "Recent trials (oldest first):"]
            for rec in recent:
                lines.append(describe_trial(rec, ctx["metric"]))
        lines += [
            "",
            "Current best script:",
            "```python",
            ctx["target_source"].rstrip(),
            "```",
            "",
            "Propose ONE change to one or a few of the parameters above that you expect to "
            f"improve {ctx['metric']} within the same training budget. Answer with one JSON "
            'object: {"changes": {"NAME": value}, "hypothesis": "one sentence"}.',
        ]
        for mechanism in self.mechanisms:
            hook = getattr(mechanism, "extend_prompt", None)
            if hook is not None:
                lines = list(hook(ctx, lines))
        return "\n".join(lines)

    def focus(self, ctx):
        """Names the mechanisms want explored next, composed from every mechanism's opinion.

        The names all mechanisms with an opinion agree on, when there are some; otherwise they
        take turns by iteration, so each one decides a share of the iterations in full (a
        union would blur them into "anything", and "the first opinion wins" let one mechanism
        silence the others).

        Mechanisms choose among the parameters that can move on their own (``ctx["movable"]``,
        given to them as ``ctx["active"]``): a parameter whose every move breaks the space or
        ``[params] constraints`` is never a focus, so no mechanism can lock the search into
        refused proposals.
        """
        if "movable" in ctx:
            ctx = dict(ctx, active=list(ctx["movable"]))
        if self.composes(ctx):  # never a focus the other mechanisms leave no move of
            blocked = self.excluded(ctx)
            open_names = [n for n in ctx["active"] if n not in blocked]
            if open_names:
                ctx = dict(ctx, active=open_names)
        opinions = []
        for mechanism in self.mechanisms:
            hook = getattr(mechanism, "focus", None)
            if hook is not None:
                names = [n for n in (hook(ctx) or []) if n in ctx["active"]]
                if names:
                    opinions.append(list(dict.fromkeys(names)))
        if not opinions:
            return None
        shared = [n for n in opinions[0] if all(n in other for other in opinions[1:])]
        if shared:
            return shared
        return opinions[int(ctx.get("iteration") or 0) % len(opinions)]

    def composes(self, ctx):
        """Rules 7: mechanisms say what they allow (``allows``) and the focus respects it."""
        return int(self.config.get("rules") or 1) >= 7 and "moves" in ctx

    def excluded(self, ctx):
        """The active parameters whose every move (``ctx["moves"]``: every value of a short
        list, else a spread of probes) some mechanism's ``allows`` refuses: name -> the names of
        the mechanisms that refuse them. A parameter with no known moves is never excluded."""
        judges = [m for m in self.mechanisms if getattr(m, "allows", None) is not None]
        out = {}
        for name, values in (ctx.get("moves") or {}).items():
            if not judges or not values or name not in ctx["active"]:
                continue
            by = set()
            for value in values:
                refusing = [type(m).__name__ for m in judges if not m.allows(ctx, {name: value})]
                if not refusing:
                    break
                by.update(refusing)
            else:
                out[name] = sorted(by)
        return out

    def allowed_line(self, ctx):
        """One line for the prompt: what the active mechanisms jointly allow (None without
        mechanisms)."""
        if not self.mechanisms:
            return None
        active = list(ctx.get("movable", ctx["active"]))
        blocked = self.excluded(dict(ctx, active=active))
        allowed = [n for n in active if n not in blocked]
        names = ", ".join(type(m).__name__ for m in self.mechanisms)
        line = f"The active mechanisms ({names}) jointly allow changes to: " + (
            ", ".join(allowed) or "none")
        if blocked:
            line += "; every move of " + ", ".join(
                f"{n} (refused by {'/'.join(by)})" for n, by in blocked.items()) + " is excluded"
        return line + "."

    def filter_candidates(self, ctx, candidates):
        for mechanism in self.mechanisms:
            hook = getattr(mechanism, "filter_candidates", None)
            if hook is not None:
                candidates = list(hook(ctx, candidates))
        return candidates

    def select(self, ctx, candidates):
        return candidates[0]

    # ---- accepting -------------------------------------------------------------------------
    def is_better(self, metric, best):
        if metric is None or not math.isfinite(metric):
            return False
        if best is None:
            return True
        return metric < best if self.direction == "min" else metric > best

    def gain_sd(self, ctx, metric, best):
        """How far ``metric`` beats ``best``, in units of the measured noise (None: unknown)."""
        sd = (ctx.get("noise") or {}).get("sd")
        if not sd or metric is None or best is None or not math.isfinite(metric):
            return None
        return (best - metric if self.direction == "min" else metric - best) / sd

    def confirm_seeds(self, ctx, metric, best):
        """How many more seeds a would-be keep must also win on (noise guard)."""
        gain = None if self.confirm else self.gain_sd(ctx, metric, best)
        if gain is None:
            return self.confirm if self.is_better(metric, best) else 0
        return self.noise_seeds if gain >= self.confirm_sd else 0

    def accept(self, ctx, metrics, best_metrics):
        """Keep iff the candidate's mean beats the best's mean by more than noise (see above)."""
        cand = mean(metrics)
        best = mean(best_metrics)
        gain = None if self.confirm else self.gain_sd(ctx, cand, best)
        if gain is not None:
            return len(metrics) > 1 and gain >= self.mean_keep_sd
        if len(metrics) > 1 and best is not None:
            best = best - self.confirm_margin if self.direction == "min" else best + self.confirm_margin
        return self.is_better(cand, best)

    def prune(self, ctx, curves):
        """Stop a trial whose last ``prune_patience`` points (all past ``prune_after``) each
        trail the best's curve at the same share by more than the margin (see above). The
        ``prune_left`` part: early on the best still had much to gain, and curves cross, so a
        trial is stopped only when it would have to gain more than half what the best did from
        there. And each point must also trail the best's result by the margin: a noisy best
        whose last measurement jumped above its curve (mini-batch SGD) is beaten by a trial its
        curve alone would stop."""
        best = curves.get("best") or []
        points = [p for p in curves.get("curve") or [] if p[0] >= self.prune_after]
        if not best or len(points) < self.prune_patience:
            return False
        sd = curves.get("sd")
        sign = 1.0 if self.direction == "min" else -1.0
        final = best[-1][1]
        result = ctx.get("best_metric")
        for share, value in points[-self.prune_patience:]:
            ref = value_at(best, share)
            if ref is None:
                return False
            margin = self.prune_sd * sd if sd else self.prune_rel * abs(ref)
            if sign * (value - ref) <= margin + self.prune_left * max(sign * (ref - final), 0.0):
                return False
            if result is not None and sign * (value - result) <= margin:
                return False
        return True

    def observe(self, ctx, record):
        for mechanism in self.mechanisms:
            hook = getattr(mechanism, "observe", None)
            if hook is not None:
                hook(ctx, record)


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def value_at(curve, x):
    """The curve ([[x, y], ...], sorted by x) at ``x``, linearly interpolated; None outside."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def fmt(value):
    return "n/a" if value is None else f"{value:.6g}"


def describe_trial(rec, metric_name):
    changes = ", ".join(f"{k}={v!r}" for k, v in (rec.get("changes") or {}).items()) or "-"
    metric = rec.get("metric")
    shown = f"{metric_name}={fmt(metric)}" if isinstance(metric, (int, float)) else rec["status"]
    hypothesis = rec.get("hypothesis") or ""
    return f"#{rec['iteration']} {changes}: {shown} [{rec['status']}] {hypothesis}".rstrip()
