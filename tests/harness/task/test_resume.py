"""How a careful client plans its next connect (harness/task/resume.py): from the
checkpoint's age, X's windows at a time scale, and the access level's ways back."""

from __future__ import annotations

import datetime as dt

import pytest
from requests.structures import CaseInsensitiveDict

from fake_stream import snowflake
from harness.task.resume import (
    MARGIN_S,
    Backoff,
    created_ms,
    plan,
    position_at,
)

NOW_MS = 1_796_000_000_000  # 2026-11-30: any time after X's epoch


def test_a_position_is_just_below_every_tweet_created_from_its_time():
    ms = NOW_MS - 1234
    first_then = snowflake.encode(ms, 0)  # the fake stream's own ids
    assert position_at(ms) < first_then
    assert position_at(ms) >= snowflake.encode(ms - 1, 2**22 - 1)
    assert created_ms(first_then) == ms


def test_no_checkpoint_or_no_way_back_reads_live():
    assert plan("recovery", None, NOW_MS).kind == "live"
    gone = plan("live", position_at(NOW_MS - 3_600_000), NOW_MS)
    assert (gone.kind, gone.params) == ("live", {})


def test_since_id_resumes_after_the_checkpoint():
    connect = plan("since_id", 12345, NOW_MS)
    assert connect.params == {"since_id": "12345"}


@pytest.mark.parametrize(
    ("age_s", "scale", "minutes"),
    [(0.0, 1.0, 1), (59.0, 1.0, 1), (61.0, 1.0, 2), (299.0, 1.0, 5), (1.0, 0.01, 3)],
)
def test_backfill_asks_for_the_minutes_that_cover_the_checkpoints_age(age_s, scale, minutes):
    """The minutes cover the age plus a margin (the server measures from a little later)."""
    checkpoint = position_at(NOW_MS - int(age_s * 1000))
    connect = plan("backfill", checkpoint, NOW_MS, scale)
    assert connect.params == {"backfill_minutes": str(minutes)}
    assert connect.unreachable_ms == 0
    reach_s = minutes * 60 * scale
    assert reach_s >= age_s + MARGIN_S - 0.001


def test_beyond_five_minutes_backfill_gives_the_five_and_names_the_span_lost():
    """At scale 0.01 five minutes are 3 s: a checkpoint 10 s old leaves 7 s unreachable."""
    checkpoint = position_at(NOW_MS - 10_000)
    connect = plan("backfill", checkpoint, NOW_MS, 0.01)
    assert connect.params == {"backfill_minutes": "5"}
    assert connect.unreachable_ms == 7_000 + 1  # created_ms(position_at(t)) is t - 1


def test_beyond_five_minutes_recovery_restreams_from_the_checkpoints_second():
    checkpoint = position_at(NOW_MS - 10_500)
    connect = plan("recovery", checkpoint, NOW_MS + 250, 0.01)
    assert connect.kind == "recovery"
    start = dt.datetime.fromisoformat(connect.params["start_time"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(connect.params["end_time"].replace("Z", "+00:00"))
    assert start.timestamp() * 1000 <= created_ms(checkpoint) < start.timestamp() * 1000 + 1000
    assert end.timestamp() * 1000 == NOW_MS  # whole seconds, never after now
    assert connect.until == position_at(NOW_MS)
    assert connect.unreachable_ms == 0


def test_recovery_reaches_back_24_scaled_hours_and_no_further():
    """At scale 0.001 the recovery window is 86.4 s: a checkpoint 100 s old loses ~13.6 s."""
    checkpoint = position_at(NOW_MS - 100_000)
    connect = plan("recovery", checkpoint, NOW_MS, 0.001)
    assert connect.kind == "recovery"
    assert 13_000 <= connect.unreachable_ms <= 14_600


def test_an_unknown_way_back_is_refused():
    with pytest.raises(ValueError, match="resume"):
        plan("rewind", 1, NOW_MS)


def test_backoff_waits_for_the_connect_budget_to_reset_when_it_is_spent():
    backoff = Backoff(seed=1)
    spent = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "1030"}
    assert 30 <= backoff.after_refusal(spent, now_s=1000) <= 30 * 1.25
    # A response's own headers, as the server spells them (requests: case-insensitive).
    sent = CaseInsensitiveDict({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "1060"})
    assert 60 <= backoff.after_refusal(sent, now_s=1000) <= 60 * 1.25


def test_backoff_doubles_on_refusals_grows_on_errors_and_resets_on_a_tweet():
    backoff = Backoff(seed=1, first_s=1, most_s=4)
    refused = {"x-rate-limit-remaining": "40"}  # another holds the connection
    waits = [backoff.after_refusal(refused, now_s=0) for _ in range(4)]
    assert 1 <= waits[0] <= 1.25
    assert 2 <= waits[1] <= 2.5
    assert 4 <= waits[2] <= 5
    assert 4 <= waits[3] <= 5  # capped at most_s, plus jitter
    assert 2 <= backoff.after_network_error() + backoff.after_network_error() <= 3.75
    backoff.reset()
    assert backoff.after_network_error() <= 1.25
