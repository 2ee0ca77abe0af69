"""Shortening never cuts a token: reasons lose whole words, lists of values whole items."""

from __future__ import annotations

from arx.core.textfit import ELLIPSIS, fit, fit_items


def test_a_reason_loses_whole_words_and_says_so():
    reason = "the proposal breaks a constraint: the combination of tied and emsize"
    short = fit(reason, 40)
    assert len(short) <= 40 and short.endswith(ELLIPSIS)
    kept = short[:-1].split()
    assert kept == reason.split()[:len(kept)]  # every word shown is a whole word of the reason
    assert short == "the proposal breaks a constraint: the…"


def test_short_text_and_whitespace_runs():
    assert fit("a  reason\nover lines", 60) == "a reason over lines"
    assert fit("", 10) == ""


def test_a_first_token_longer_than_the_width_is_kept_whole():
    assert fit("params.l2_regularization=0.401 more", 10) == "params.l2_regularization=0.401" + ELLIPSIS


def test_values_are_shown_whole_and_the_dropped_ones_counted():
    items = ["params.l2_regularization 0.401->0.38", "lr 0.1->0.2", "depth 4->6"]
    short = fit_items(items, 60)
    assert short == "params.l2_regularization 0.401->0.38, lr 0.1->0.2 (+1 more)"
    assert fit_items(items, 200) == ", ".join(items)
    assert fit_items(items[:1], 5) == items[0]
    assert fit_items(items, 10) == "params.l2_regularization 0.401->0.38 (+2 more)"
