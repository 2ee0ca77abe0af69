"""Shortening text for a line, a cell or a trailer without cutting a token in two.

A value cut mid-number (``0.401->0.``) or a reason cut mid-word (``a constraint: the co``) reads
as something it is not. Every place arx shortens what it shows asks here: reasons lose whole
words (an ellipsis says so), lists of values lose whole items (a count says how many). What is
stored (trailers, subjects, trace reasons) keeps the cut it always had: replay compares it with
old branches byte for byte. A leaf: strings in, a string out.
"""

from __future__ import annotations

from collections.abc import Sequence

ELLIPSIS = "…"


def fit(text: str, width: int) -> str:
    """``text`` on one line in at most ``width`` characters, cut between words.

    Whitespace runs become one space. When words are dropped the result ends with an ellipsis
    (within ``width``). A first word longer than ``width`` is kept whole: a token is never cut,
    so such a line is longer than asked.
    """
    words = text.split()
    line = " ".join(words)
    if len(line) <= width:
        return line
    kept = words[0]
    for word in words[1:]:
        if len(kept) + 1 + len(word) + len(ELLIPSIS) > width:
            break
        kept += " " + word
    return kept.rstrip(",;:") + ELLIPSIS


def fit_items(items: Sequence[str], width: int, sep: str = ", ") -> str:
    """Whole ``items`` joined by ``sep`` in about ``width`` characters; the dropped ones are
    counted ("(+2 more)"). The first item is always shown whole."""
    items = [" ".join(i.split()) for i in items]
    whole = sep.join(items)
    if len(whole) <= width or len(items) < 2:
        return whole
    shown = [items[0]]
    for n, item in enumerate(items[1:], start=1):
        more = f" (+{len(items) - n - 1} more)" if n < len(items) - 1 else ""
        if len(sep.join([*shown, item])) + len(more) > width:
            break
        shown.append(item)
    left = len(items) - len(shown)
    return sep.join(shown) + (f" (+{left} more)" if left else "")
