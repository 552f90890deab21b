"""Hand-built histories with known answers, one per verdict and per special case."""

from __future__ import annotations

import pytest

from fake_stream import snowflake
from harness.check.checker import SequenceChecker, TimingChecker, TotalQueueChecker
from harness.check.metrics import metrics_of
from tests.harness.check._histories import T0_MS, T0_WALL, Spec, history_of

# Ten tweets, one per millisecond; a consumer connected from the start; window = all ten.
IDS = [snowflake.encode(T0_MS + slot, 0) for slot in range(10)]


def spec(commits, deliveries=((1, 0, 10, "acked"),), drops=(), tries=(), grace=0.0) -> Spec:
    return Spec(
        slot_counts=[1] * 10,
        deliveries=list(deliveries),
        drops=list(drops),
        commits=[
            (T0_WALL + 0.02 + i * 0.001, pid, t, batch) for i, (pid, t, batch) in enumerate(commits)
        ],
        opened_at=[T0_WALL],
        stopped_at=T0_WALL + 0.010,
        grace=grace,
        tries=list(tries),
    )


def queue(s: Spec) -> dict:
    return TotalQueueChecker().check(history_of(s))


def test_exactly_once():
    result = queue(spec([(1, 1, IDS[:5]), (1, 1, IDS[5:])]))
    assert (result["verdict"], result["valid"], result["lost"], result["duplicates"]) == (
        "exactly-once",
        True,
        0,
        0,
    )
    assert result["processed_unique"] == result["processed_total"] == result["created"] == 10


def test_at_least_once_names_the_try_that_repeated():
    result = queue(spec([(1, 1, IDS[:6]), (2, 2, IDS[4:])]))  # try 2 re-did tweets 4 and 5
    assert result["verdict"] == "at-least-once"
    assert result["duplicates"] == 2
    assert result["duplicates_by_try"] == [{"try": 2, "pid": 2, "copies": 2}]
    assert [s["id"] for s in result["samples"]["duplicated"]] == [str(i) for i in IDS[4:6]]
    assert [c["try"] for c in result["samples"]["duplicated"][0]["copies"]] == [1, 2]


def test_at_most_once_splits_loss_by_cause():
    result = queue(spec(
        [(1, 1, IDS[:3] + IDS[7:])],
        deliveries=[(1, 0, 5, "acked"), (1, 5, 6, "unknown")],
        drops=[(1, 6, 7, "queue_overflow")],
    ))  # fmt: skip
    assert result["verdict"] == "at-most-once"
    assert result["lost"] == 4
    assert result["lost_by_cause"] == {
        "delivered_not_processed": 2,  # 3, 4: acknowledged, never committed
        "in_flight_unknown": 1,  # 5
        "never_delivered": 1,  # 6
        "never_delivered_by_reason": {"queue_overflow": 1},
        "skipped_by_resume": 0,
        "beyond_backfill": 0,
    }


def test_a_reconnect_that_starts_past_lost_tweets_skipped_them():
    """Tweets 5-9 dropped when connection 1 ended; connection 2, opened at 8 ms, starts
    live (at tweet 8): 5, 6, 7 were created before it and not asked for, 8 and 9 were."""
    s = spec(
        [(1, 1, IDS[:5])], deliveries=[(1, 0, 5, "acked")], drops=[(1, 5, 10, "client_closed")]
    )
    s.opened_at, s.start_index = [T0_WALL, T0_WALL + 0.008], [0, 8]
    causes = queue(s)["lost_by_cause"]
    assert (causes["never_delivered"], causes["skipped_by_resume"]) == (5, 3)
    gaps = SequenceChecker().check(history_of(spec([(1, 1, IDS[:3] + IDS[7:])])))["gaps"]
    assert gaps["ranges"] == [{"first_id": str(IDS[3]), "last_id": str(IDS[6]), "count": 4}]


def test_broken_when_both_lost_and_repeated():
    assert queue(spec([(1, 1, IDS[:5]), (1, 1, IDS[:5])]))["verdict"] == "broken"


def test_broken_when_an_id_was_never_created():
    stranger = snowflake.encode(T0_MS - 5, 7)
    result = queue(spec([(1, 1, [*IDS, stranger])]))
    assert (result["verdict"], result["unexpected"]) == ("broken", 1)
    assert result["samples"]["unexpected"] == [stranger]


def test_nothing_in_the_window_is_unknown_not_valid():
    empty = spec([], grace=1.0)  # the grace swallows the whole run
    assert queue(empty)["valid"] == "unknown"
    assert SequenceChecker().check(history_of(empty))["valid"] == "unknown"


@pytest.mark.parametrize(
    ("tries", "silent"),
    [
        ([(1, 1, "ok")], True),
        ([(1, 1, "fail")], False),
        ([(1, 1, "info"), (2, 2, "ok")], True),
        ([], "unknown"),
    ],
)
def test_silent_failure_is_success_despite_loss(tries, silent):
    result = queue(spec([(1, 1, IDS[:5])], tries=tries))
    assert result["silent_failure"] == silent


def test_airflow_states_take_precedence_over_the_probe():
    history = history_of(spec([(1, 1, IDS[:5])], tries=[(1, 1, "fail")]))
    history.airflow_tries = [{"try_number": 1, "state": "success"}]
    result = TotalQueueChecker().check(history)
    assert (result["silent_failure"], result["silent_failure_source"]) == (True, "airflow")


def test_latency_is_creation_to_first_commit():
    # Tweet i is created at T0 + i ms; all ten committed at T0 + 20 ms.
    timing = TimingChecker().check(history_of(spec([(1, 1, IDS)])))
    assert timing["latency"]["max"] == pytest.approx(0.020)
    assert timing["latency"]["p50"] == pytest.approx(0.0155)


def test_metrics_json_holds_window_and_every_checker():
    metrics = metrics_of(history_of(spec([(1, 1, IDS)])))
    assert metrics["verdict"] == "exactly-once"
    assert metrics["valid"] is True
    assert {"queue", "sequence", "timing", "window"} <= set(metrics)
    assert metrics["window"]["first_index"] == 0
    assert metrics["window"]["stop_index"] == 10


def test_a_try_is_a_silent_failure_only_for_what_was_lost_after_its_own_end():
    # Tweet i is created at T0 + i ms; 0-4 committed, 5-9 lost.
    def silent(tries, ending=None, marks=()):
        s = spec([(1, 1, IDS[:5])], tries=tries)
        s.ending, s.stop_marks = ending, list(marks)
        return queue(s)["silent_failure_tries"]

    ends_at_5ms = [(1, 1, "ok", T0_WALL, T0_WALL + 0.005)]
    assert silent(ends_at_5ms) == [
        {"try": 1, "pid": 1, "ended_at": T0_WALL + 0.005, "lost_after": 5}
    ]
    # A next try started at 7 ms: try 1 answers only for tweets 5 and 6.
    assert silent([*ends_at_5ms, (2, 2, "info", T0_WALL + 0.007, None)])[0]["lost_after"] == 2
    # Ended after the loss it is blamed for? No: tweets 5-9 were lost before it ended.
    assert silent([(1, 1, "ok", T0_WALL, T0_WALL + 0.011)]) == []
    # Ended because the harness asked (after the request, or having read it): not silent.
    assert silent(ends_at_5ms, ending={"how": "quiescent", "stop_requested_at": T0_WALL}) == []
    assert silent(ends_at_5ms, marks=[1]) == []


def test_a_cut_run_is_incomplete_and_what_it_held_is_pending_not_lost():
    """Connection 1 read 0-5 and closed before the cut (its try died: 4, 5 lost);
    connection 2, open at the cut, had read 6 and was owed 7-9: pending, not lost."""
    s = spec(
        [(1, 1, IDS[:4])],
        deliveries=[(1, 0, 6, "acked"), (2, 6, 7, "acked")],
        drops=[(2, 7, 10, "client_closed")],
    )
    s.opened_at = [T0_WALL, T0_WALL + 0.006]
    s.ending = {"how": "cap", "stop_requested_at": T0_WALL + 1}
    history = history_of(s)
    history.connections[0]["closed_at"] = T0_WALL + 0.5
    result = TotalQueueChecker().check(history)
    assert (result["verdict"], result["verdict_so_far"], result["valid"]) == (
        "incomplete", "at-most-once", "unknown"
    )  # fmt: skip
    assert (result["lost"], result["pending_at_cut"]) == (2, 4)
    history = history_of(s)
    history.connections[0]["closed_at"] = T0_WALL + 0.5
    history.ending = {"how": "quiescent", "stop_requested_at": T0_WALL + 1}
    result = TotalQueueChecker().check(history)
    assert (result["verdict"], result["lost"], result["pending_at_cut"]) == ("at-most-once", 6, 0)
