"""tweepy 4.17's ``StreamingClient``, a real X client, consuming the fake stream.

tweepy hard-codes ``https://api.twitter.com``; ``fake_stream.clients.redirect_tweepy``
mounts a requests adapter on ``client.session`` that rewrites those URLs to the fake
server's ``http://127.0.0.1:<port>``. Nothing of tweepy is patched or mocked: its own
threads, parsing and callbacks run.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests
import tweepy

from fake_stream.clients import redirect_tweepy
from harness.run.services import StreamServerProcess

TWEPOCH = 1288834974657


class Collector(tweepy.StreamingClient):
    """A StreamingClient that records what tweepy hands its callbacks."""

    def __init__(self, server: StreamServerProcess) -> None:
        super().__init__(server.token, wait_on_rate_limit=False, max_retries=5)
        redirect_tweepy(self, server.url)
        self.tweets: list[tweepy.Tweet] = []
        self.matching: list[list[tweepy.StreamRule]] = []
        self.responses: list[Any] = []
        self.exceptions: list[Exception] = []
        self.events: list[str] = []
        self.disconnected = threading.Event()

    def on_connect(self) -> None:
        self.events.append("connect")

    def on_tweet(self, tweet: tweepy.Tweet) -> None:
        self.tweets.append(tweet)

    def on_matching_rules(self, matching_rules: list[tweepy.StreamRule]) -> None:
        self.matching.append(matching_rules)

    def on_response(self, response: Any) -> None:
        self.responses.append(response)

    def on_exception(self, exception: Exception) -> None:
        self.exceptions.append(exception)

    def on_connection_error(self) -> None:
        self.events.append("connection_error")

    def on_request_error(self, status_code: int) -> None:
        self.events.append(f"request_error:{status_code}")

    def on_closed(self, response: requests.Response) -> None:
        self.events.append("closed")

    def on_disconnect(self) -> None:
        self.events.append("disconnect")
        self.disconnected.set()


def _wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _wait_no_connections(server: StreamServerProcess) -> None:
    _wait_for(lambda: not server.control("GET", "stats")["connections"], 5, "the close")


def test_tweepy_manages_rules_and_streams_tweets_with_their_rules(start_server):
    """tweepy's add_rules / get_rules / delete_rules work against the fake; filter() then
    receives tweets whose matching_rules carry id and tag (an empty tag for a rule added
    without one: tweepy needs the key), every tweet is one the ledger says was sent on
    that connection, and disconnect() ends the stream."""
    server = start_server("--rate", "300", "--seed", "21")
    client = Collector(server)

    (default,) = client.get_rules().data
    assert default.tag == "all"
    added = client.add_rules([tweepy.StreamRule("cats", tag="felines"), tweepy.StreamRule("dogs")])
    assert [(r.value, r.tag) for r in added.data] == [("cats", "felines"), ("dogs", "")]
    assert added.meta["summary"]["created"] == 2
    deleted = client.delete_rules([default.id])
    assert deleted.meta["summary"] == {"deleted": 1, "not_deleted": 0}
    rules = {r.id: r for r in client.get_rules().data}
    assert sorted(r.value for r in rules.values()) == ["cats", "dogs"]
    duplicate = client.add_rules(tweepy.StreamRule("cats"))
    assert [e["title"] for e in duplicate.errors] == ["DuplicateRule"]

    thread = client.filter(threaded=True)
    _wait_for(lambda: len(client.tweets) >= 300, 15, "300 tweets through tweepy")
    client.disconnect()
    thread.join(10)
    assert not thread.is_alive()
    assert client.exceptions == []
    assert client.events[0] == "connect"
    assert client.events[-1] == "disconnect"
    assert "connection_error" not in client.events

    ids = [t.id for t in client.tweets]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for tweet in client.tweets[:50]:
        assert tweet.edit_history_tweet_ids == [tweet.id]
        created_ms = round(tweet.created_at.timestamp() * 1000)
        assert created_ms == (tweet.id >> 22) + TWEPOCH
    # One matching_rules list per tweet, each a current rule with its tag.
    assert len(client.matching) == len(client.tweets)
    for matched in client.matching:
        (rule,) = matched
        assert rule.tag == rules[rule.id].tag
    assert {m[0].id for m in client.matching} == set(rules)
    # includes.users reach tweepy as User objects for the author.
    response = client.responses[0]
    assert response.includes["users"][0].id == response.data.author_id

    _wait_no_connections(server)
    server.stop()
    ledger = server.ledger_reader()
    (conn,) = ledger.connections()
    assert conn["endpoint"] == "/2/tweets/search/stream"
    sent = set(ledger.ids_of(ledger.delivered_indexes(conn["conn_id"])).tolist())
    sent |= set(ledger.ids_of(ledger.delivered_indexes(conn["conn_id"], status="unknown")).tolist())
    assert set(ids) <= sent


def test_a_truncated_line_stops_tweepy_for_good(start_server):
    """The reference's claim, checked against tweepy 4.17: a truncated JSON line raises
    a ValueError inside on_data; tweepy's inner loop only catches connection
    errors, so the outer ``except Exception`` calls on_exception, closes the session and
    ends the thread. No reconnect follows (the ledger has one connection), although the
    server goes on creating tweets; the cut tweet is recorded as destroyed by the fault."""
    server = start_server("--rate", "300", "--seed", "22")
    client = Collector(server)
    thread = client.filter(threaded=True)
    _wait_for(lambda: len(client.tweets) >= 100, 15, "tweets before the fault")
    server.control("POST", "faults", {"type": "malformed", "name": "cut"})
    assert client.disconnected.wait(10), "tweepy kept streaming past the truncated line"
    thread.join(5)
    assert not thread.is_alive()
    assert client.running is False

    (error,) = client.exceptions
    # json.loads(bytes) in on_data: JSONDecodeError, or UnicodeDecodeError when the cut
    # fell inside a multi-byte character (the Japanese texts). Both are ValueErrors that
    # tweepy's connection-error handler does not catch.
    assert isinstance(error, json.JSONDecodeError | UnicodeDecodeError)
    assert client.events.count("connect") == 1
    assert "connection_error" not in client.events
    received = len(client.tweets)
    created = server.control("GET", "stats")["created"]
    time.sleep(1.0)  # tweets keep being created; tweepy does not come back for them
    assert server.control("GET", "stats")["created"] > created
    assert len(client.tweets) == received
    assert client.events.count("connect") == 1

    _wait_no_connections(server)
    server.stop()
    ledger = server.ledger_reader()
    (conn,) = ledger.connections()  # no second connection: tweepy gave up
    assert conn["end_reason"] == "client_closed"
    (cut,) = [d for d in ledger.drops() if d.reason == "fault:cut"]
    assert cut.stage == "fault"
    assert len(cut) == 1
    (cut_id,) = ledger.ids_of([cut.first]).tolist()
    assert client.tweets[-1].id < cut_id  # tweepy got everything before it, nothing after
    (fired,) = [e for e in ledger.events("fault") if e["name"] == "cut"]
    assert fired["effect"] == "truncated"
