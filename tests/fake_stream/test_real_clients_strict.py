"""Real X clients, unmodified, against the fake stream under ``--strict-x``: X's own Python
SDK (``xdk`` 0.10) and tweepy 4.17's ``StreamingClient``, pointed at the fake by
``fake_stream.clients``.

Each client reads until the server stops (the final chunk), so what it parsed must be
exactly what the ledger says that connection acknowledged: the same ids in the same order,
and the texts the server renders for those tweets (``TweetFactory`` of the same seed).
The connect requests carry X's field parameters; the strict server would have answered
400 to anything X does not take, so an accepted connection (in the ledger, with those
parameters) is the check that the client asked only for what X has.

What xdk does (read from its source, ``xdk/streaming.py``; checked here): a clean end of
the stream makes it reconnect at once, with the same parameters; a 4xx other than 429 is
raised as a ``StreamError`` without retrying; a connection error is retried with
exponential back-off until ``StreamConfig.max_retries``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
import tweepy
import xdk
from xdk import StreamConfig, StreamError, StreamErrorType

from fake_stream.clients import redirect_tweepy, xdk_client
from fake_stream.tweets import TweetFactory

SEED = 31
STRICT = ("--strict-x", "--rate", "500", "--seed", str(SEED))
TWEPOCH = 1288834974657  # X's Snowflake epoch (the reference)
INVALID = "https://api.twitter.com/2/problems/invalid-request"
#: X's filtered-stream parameters (its "not one of" list), not asked of the server.
X_FILTERED = {
    "backfill_minutes", "end_time", "expansions", "media.fields", "place.fields",
    "poll.fields", "start_time", "tweet.fields", "user.fields",
}  # fmt: skip
TWEET_FIELDS = ["author_id", "created_at", "edit_history_tweet_ids", "lang"]
#: What both clients send for the fields above (the same query, as X documents it).
QUERY = {
    "tweet.fields": [",".join(TWEET_FIELDS)],
    "expansions": ["author_id"],
    "user.fields": ["username"],
}


@pytest.fixture(scope="module")
def factory() -> TweetFactory:
    """The server's tweet content for SEED (a few seconds of Faker: once per module)."""
    return TweetFactory(SEED)


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def ledger_tweets(ledger, factory: TweetFactory, indexes: np.ndarray) -> list[tuple[int, str]]:
    """(id, text) of the tweets at ``indexes``, as the server rendered them."""
    ids = ledger.ids_of(indexes)
    lines = factory.lines(indexes, ids, (ids >> 22) + TWEPOCH, None)
    return [(int(i), json.loads(line)["data"]["text"]) for i, line in zip(ids, lines, strict=True)]


def the_accepted_connection(ledger) -> dict[str, Any]:
    """The ledger's one connection: strict, accepted with X's parameters, ended by the stop."""
    assert ledger.meta["strict_x"] is True
    (conn,) = ledger.connections()
    assert conn["endpoint"] == "/2/tweets/search/stream"
    assert conn["end_reason"] == "server_shutdown"
    params = parse_qs(conn["params"])
    assert params == QUERY
    assert set(params) <= X_FILTERED
    assert ledger.events("refused") == []
    return conn


class XdkReader:
    """``client.stream.posts(...)`` in a thread, recording what xdk yields and reports."""

    def __init__(self, client: xdk.Client, max_retries: int = 0, **params: Any) -> None:
        self.messages: list[Any] = []
        self.events: list[str] = []
        self.errors: list[StreamError] = []
        config = StreamConfig(
            max_retries=max_retries,
            initial_backoff=0.1,
            on_connect=lambda: self.events.append("connect"),
            on_disconnect=lambda e: self.events.append(f"disconnect:{type(e).__name__}"),
        )
        self.stream = client.stream.posts(stream_config=config, **params)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for message in self.stream:
                self.messages.append(message)
        except StreamError as e:
            self.errors.append(e)

    def join(self) -> None:
        self.thread.join(20)
        assert not self.thread.is_alive()


class TweepyReader(tweepy.StreamingClient):
    """A StreamingClient that records its callbacks and stops at the first end (a clean
    end, a connection error or an HTTP error) instead of reconnecting."""

    def __init__(self, token: str) -> None:
        super().__init__(token, wait_on_rate_limit=False, max_retries=0)
        self.responses: list[tweepy.StreamResponse] = []
        self.events: list[str] = []
        self.exceptions: list[Exception] = []

    def on_connect(self) -> None:
        self.events.append("connect")

    def on_response(self, response: tweepy.StreamResponse) -> None:
        self.responses.append(response)

    def on_closed(self, response: requests.Response) -> None:
        self.events.append("closed")
        self.disconnect()

    def on_connection_error(self) -> None:
        self.events.append("connection_error")
        self.disconnect()

    def on_request_error(self, status_code: int) -> None:
        self.events.append(f"request_error:{status_code}")
        self.disconnect()

    def on_exception(self, exception: Exception) -> None:
        self.exceptions.append(exception)

    def on_disconnect(self) -> None:
        self.events.append("disconnect")


def test_xdk_reads_under_strict_x_exactly_what_the_ledger_delivered(start_server, factory):
    """xdk's filtered stream with X's field parameters: accepted; every message validates
    into its model (none skipped: the ids equal the ledger's acknowledged deliveries, in
    order), texts included; the stop's clean end is no error to xdk: it reconnects at once
    and only that reconnect (the port is closed) fails."""
    server = start_server(*STRICT)
    client = xdk_client(server.url, server.token)
    # The rules endpoints through xdk too: the default rule every tweet matches.
    (page,) = client.stream.get_rules()
    (rule,) = page.data
    reader = XdkReader(
        client, tweet_fields=TWEET_FIELDS, expansions=["author_id"], user_fields=["username"]
    )
    wait_for(lambda: len(reader.messages) >= 300 or reader.errors, 15, "300 tweets through xdk")
    assert server.stop() == 0
    reader.join()

    assert reader.events == ["connect", "disconnect:NoneType"]
    (error,) = reader.errors  # the reconnect after the clean end, max_retries=0
    assert error.error_type is StreamErrorType.FATAL_ERROR
    assert isinstance(error.original_exception, requests.ConnectionError)
    got = [(int(m.data.id), m.data.text) for m in reader.messages]
    for message in reader.messages:
        assert [(r.id, r.tag) for r in message.matching_rules] == [(rule.id, rule.tag)]
        (user,) = message.includes.users
        assert user.id == message.data.author_id
        assert message.data.edit_history_tweet_ids == [message.data.id]

    assert_read_what_the_ledger_delivered(server, factory, got)


def assert_read_what_the_ledger_delivered(server: Any, factory: Any, got: list) -> None:
    """``got`` (id, text) is 300 or more tweets, exactly those the ledger records as
    acknowledged by the one accepted connection, none of unknown fate."""
    ledger = server.ledger_reader()
    conn = the_accepted_connection(ledger)
    assert len(ledger.delivered_indexes(conn["conn_id"], status="unknown")) == 0
    expected = ledger_tweets(ledger, factory, ledger.delivered_indexes(conn["conn_id"]))
    assert len(got) >= 300
    assert got == expected


def test_tweepy_reads_under_strict_x_exactly_what_the_ledger_delivered(start_server, factory):
    """tweepy's StreamingClient, redirected by fake_stream.clients, with the same fields:
    accepted, and what it hands on_response is the ledger's acknowledged deliveries."""
    server = start_server(*STRICT)
    client = redirect_tweepy(TweepyReader(server.token), server.url)
    thread = client.filter(
        threaded=True, tweet_fields=TWEET_FIELDS, expansions=["author_id"], user_fields="username"
    )
    wait_for(lambda: len(client.responses) >= 300 or not client.running, 15, "300 tweets")
    assert server.stop() == 0
    thread.join(20)
    assert not thread.is_alive()

    assert client.exceptions == []
    assert client.events == ["connect", "closed", "disconnect"]
    got = [(r.data.id, r.data.text) for r in client.responses]
    for response in client.responses:
        (user,) = response.includes["users"]
        assert user.id == response.data.author_id
        assert [r.tag for r in response.matching_rules] == ["all"]

    assert_read_what_the_ledger_delivered(server, factory, got)


def test_strict_x_refuses_an_extension_and_each_client_reports_it(start_server):
    """The other side of the check above: a parameter X lacks (our since_id) is a 400 with
    X's invalid-request problem, no connection; xdk raises it at once (not retried, though
    max_retries allows 10), tweepy calls on_request_error(400)."""
    server = start_server(*STRICT)
    client = xdk_client(server.url, server.token)
    client.session.params = {"since_id": "1"}  # requests adds it to every request
    reader = XdkReader(client, max_retries=10)
    reader.join()
    (error,) = reader.errors
    assert (error.error_type, error.status_code) == (StreamErrorType.CLIENT_ERROR, 400)
    assert error.is_retryable is False
    problem = json.loads(error.response_body or "")
    assert problem["type"] == INVALID
    assert "[since_id] is not one of [" in problem["errors"][0]["message"]
    assert reader.messages == []
    assert reader.events == ["disconnect:HTTPError"]

    stream = redirect_tweepy(TweepyReader(server.token), server.url)
    # tweepy passes unknown parameters on, logging "Unexpected parameter" with log.warn
    with pytest.warns(DeprecationWarning, match="'warn' method is deprecated"):
        stream.filter(since_id="1")
    assert stream.events == ["request_error:400", "disconnect"]
    assert stream.responses == []

    assert server.stop() == 0
    assert server.ledger_reader().connections() == []


def test_xdk_reconnect_with_backfill_minutes_replays_the_seam(start_server):
    """X's backfill through xdk: a first connection read 300 tweets and closed, then
    ``posts(backfill_minutes=1)`` under ``--backfill-scale 0.01``: the new connection
    starts 0.6 s back, oldest first, so the tail of the first comes again (duplicates,
    as X documents) and nothing between the two is missing."""
    server = start_server(*STRICT, "--backfill-scale", "0.01")
    client = xdk_client(server.url, server.token)
    first_stream = client.stream.posts(stream_config=StreamConfig(max_retries=0))
    first: list[int] = []
    for message in first_stream:
        first.append(int(message.data.id))
        if len(first) == 300:
            break
    first_stream.close()  # closes the connection (its response goes with the generator)
    # Reconnecting at once races the server's release of the first connection: X allows
    # one per token, so that is a 429 TooManyConnections (which xdk retries after
    # StreamConfig.initial_backoff). Wait for the release instead.
    wait_for(lambda: not server.control("GET", "stats")["connections"], 5, "the close")
    replay = XdkReader(client, backfill_minutes=1)
    wait_for(lambda: len(replay.messages) >= 600 or replay.errors, 15, "the replay and more")
    assert server.stop() == 0
    replay.join()
    second = [int(m.data.id) for m in replay.messages]

    ledger = server.ledger_reader()
    one, two = ledger.connections()
    assert one["end_reason"] == "client_closed"
    assert (one["params"], two["params"]) == ("", "backfill_minutes=1")
    assert two["end_reason"] == "server_shutdown"
    assert ledger.events("refused") == []
    # The first connection: what xdk yielded is the start of what went out on it.
    sent_one = [*ledger.delivered_indexes(one["conn_id"]), *ledger.delivered_indexes(
        one["conn_id"], status="unknown")]  # fmt: skip
    assert first == ledger.ids_of(np.array(sent_one[: len(first)])).tolist()
    # The second: exactly its acknowledged deliveries, the replay first.
    assert second == ledger.ids_of(ledger.delivered_indexes(two["conn_id"])).tolist()
    (backfill,) = ledger.events("backfill")
    assert backfill["conn_id"] == two["conn_id"]
    assert backfill["to_ms"] - backfill["from_ms"] == 600  # 1 minute x 0.01
    replayed = ledger.ids_of(np.arange(backfill["first"], backfill["live_from"])).tolist()
    assert second[: len(replayed)] == replayed
    duplicates = set(first) & set(second)
    assert duplicates
    assert duplicates <= set(replayed)
    # Nothing lost across the seam: every tweet from the first one on arrived.
    created = ledger.created_ids().tolist()
    start = created.index(first[0])
    assert sorted(set(first) | set(second)) == created[start : start + len(set(first + second))]
