"""Recovery after a disconnect: X's backfill_minutes and our since_id extension."""

from __future__ import annotations

import time

from fake_stream import snowflake
from tests.fake_stream._clients import Received, read_with_requests


def test_since_id_resumes_right_after_the_last_tweet_with_no_gap(start_server):
    server = start_server("--rate", "1000", "--seed", "11")
    first = Received()
    read_with_requests(server.stream_url, server.token, first, stop_after=300)
    time.sleep(1.0)  # tweets are created while nobody is connected
    second = Received()
    read_with_requests(
        server.stream_url, server.token, second, {"since_id": str(first.ids[-1])}, stop_after=1500
    )
    server.stop()

    books = server.ledger_reader()
    created = books.created_ids().tolist()
    start = created.index(first.ids[0])
    both = first.ids + second.ids
    # Everything from the first tweet on, in creation order, each exactly once.
    assert both == created[start : start + len(both)]
    assert second.ids[0] == created[created.index(first.ids[-1]) + 1]


def test_backfill_minutes_replays_the_missed_minute_with_duplicates(start_server):
    """X replays from `now - N minutes`, oldest first; clients must de-duplicate by id."""
    server = start_server("--rate", "1000", "--seed", "12")
    time.sleep(0.5)
    first = Received()
    read_with_requests(server.stream_url, server.token, first, stop_after=200)
    time.sleep(0.5)
    replay = Received()
    read_with_requests(
        server.stream_url, server.token, replay, {"backfill_minutes": "1"}, stop_after=2000
    )
    server.stop()

    books = server.ledger_reader()
    created = books.created_ids().tolist()
    # The server is younger than a minute: the replay starts at the very first tweet.
    assert replay.ids[:50] == created[:50]
    assert set(first.ids) <= set(replay.ids)  # what the first connection saw comes again
    assert replay.ids == created[: len(replay.ids)]


def test_since_id_older_than_retention_is_clamped_and_recorded(start_server):
    server = start_server("--rate", "1000", "--seed", "13", "--retention", "1")
    early = Received()
    read_with_requests(server.stream_url, server.token, early, stop_after=5)
    time.sleep(2.5)
    later = Received()
    read_with_requests(
        server.stream_url, server.token, later, {"since_id": str(early.ids[0])}, stop_after=50
    )
    server.stop()

    books = server.ledger_reader()
    (clamp,) = books.events("replay_clamped")
    created = books.created_ids().tolist()
    assert later.ids[0] == created[clamp["oldest_retained"]]
    # About one second of history (1,000 tweets/s) was skipped: measurable loss.
    assert clamp["oldest_retained"] - clamp["asked_from"] > 1000


def test_replayed_history_does_not_count_against_the_queue(start_server):
    """A backfill larger than the queue limit is not a slow consumer."""
    server = start_server("--rate", "2000", "--seed", "14", "--queue-size", "500")
    time.sleep(1.5)  # ~3,000 tweets of history, six times the queue
    replay = Received()
    read_with_requests(
        server.stream_url, server.token, replay, {"backfill_minutes": "1"}, stop_after=4000
    )
    server.stop()
    books = server.ledger_reader()
    assert len(replay.ids) == 4000
    assert books.connections()[0]["end_reason"] != "queue_overflow"
    assert not [d for d in books.drops() if d.reason == "queue_overflow"]


def test_since_id_is_a_lower_bound_not_a_tweet(start_server):
    """As on X, since_id need not be a tweet's id: any id works as "newer than". One built
    from a moment (position 0 of its millisecond, minus one) starts at the first tweet
    created at or after that moment: how a consumer resumes from a time."""
    server = start_server("--rate", "1000", "--seed", "15")
    time.sleep(1.0)
    t0_ms = server.control("GET", "stats")["t0_ms"]
    moment = snowflake.encode(t0_ms + 500, 0) - 1  # "everything from 0.5 s into the stream"
    received = Received()
    read_with_requests(
        server.stream_url, server.token, received, {"since_id": str(moment)}, stop_after=100
    )
    server.stop()
    created = server.ledger_reader().created_ids().tolist()
    first = next(i for i in created if i > moment)
    assert snowflake.decode_ms(first) >= t0_ms + 500
    assert received.ids == created[created.index(first) : created.index(first) + 100]
