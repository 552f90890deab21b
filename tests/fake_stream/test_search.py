"""``GET /2/tweets/search/recent``: X's recent search over the stream's own tweets.

Real servers on loopback, a real client (tweepy's ``Client`` and ``Paginator``) and raw
sockets; the ground truth is the ledger and what a stream client read at the same time.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import requests
import tweepy
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_stream.access import format_time
from fake_stream.clients import tweepy_client
from fake_stream.config import ServerConfig
from fake_stream.problems import Problem
from fake_stream.query import Matcher, Pools, QueryError, parse
from fake_stream.rates import parse_profile
from fake_stream.search import find, parse_params
from fake_stream.snowflake import decode_ms
from fake_stream.state import StreamState
from tests.fake_stream._clients import assert_problem, raw_get

PATH = "/2/tweets/search/recent"
ALL = "lang:en OR lang:es OR lang:fr OR lang:ja"  # every tweet: the stream's default rule


def search(server, **params) -> requests.Response:
    return requests.get(server.url + PATH, params=params, headers=server.headers, timeout=30)


def all_pages(server, **params) -> list[dict]:
    """Every page of a search, following ``meta.next_token``."""
    bodies = []
    while True:
        response = search(server, **params)
        assert response.status_code == 200, response.text
        bodies.append(response.json())
        token = bodies[-1]["meta"].get("next_token")
        if token is None:
            return bodies
        params = {**params, "next_token": token}


def ids_of(bodies: list[dict]) -> list[int]:
    return [int(t["id"]) for body in bodies for t in body.get("data", [])]


def created_ids(server) -> list[int]:
    server.control("POST", "ledger/flush")
    return server.ledger_reader().created_ids().tolist()


def read_stream(server, count: int) -> list[dict]:
    """The ``data`` of the first ``count`` tweets of a sample-stream connection."""
    seen: list[dict] = []
    url = server.url + "/2/tweets/sample/stream"
    with requests.get(url, headers=server.headers, stream=True, timeout=30) as response:
        for line in response.iter_lines(chunk_size=4096, delimiter=b"\r\n"):
            if line.strip():
                seen.append(json.loads(line)["data"])
                if len(seen) == count:
                    return seen
    raise AssertionError(f"the stream ended after {len(seen)} tweets")


def search_connections(books) -> list[dict]:
    return [c for c in books.connections() if c["endpoint"] == PATH]


def test_tweepy_pages_through_exactly_what_the_stream_carried(start_server):
    """A poller (tweepy's Paginator) and a stream client see one ground truth."""
    server = start_server("--rate", "500", "--seed", "31")
    seen = read_stream(server, 1200)
    since, until = int(seen[100]["id"]), int(seen[1100]["id"])
    client = tweepy_client(server.url, server.token)
    query = "lang:en OR lang:fr"
    pages = list(
        tweepy.Paginator(
            client.search_recent_tweets,
            query=query,
            since_id=since,
            until_id=until,
            max_results=100,
            tweet_fields=["created_at", "lang"],
        )
    )
    got = [tweet.id for page in pages for tweet in page.data]
    wanted = [
        t for t in reversed(seen) if since < int(t["id"]) < until and t["lang"] in ("en", "fr")
    ]
    assert got == [int(t["id"]) for t in wanted]  # newest first, each once, none missing
    assert len(pages) == -(-len(wanted) // 100)
    by_id = {int(t["id"]): t for t in wanted}
    assert all(tweet.text == by_id[tweet.id]["text"] for page in pages for tweet in page.data)
    # The whole data object is the stream's, field for field.
    first = search(server, query=query, since_id=since, until_id=until, max_results=10).json()
    assert first["data"] == wanted[:10]
    assert {u["id"] for u in first["includes"]["users"]} == {t["author_id"] for t in wanted[:10]}
    server.stop()

    books = server.ledger_reader()
    created = books.created_ids().tolist()
    start = created.index(int(seen[0]["id"]))
    # The stream client saw every tweet of the range, so `wanted` is all that matched.
    assert created[start : start + len(seen)] == [int(t["id"]) for t in seen]
    conns = search_connections(books)
    assert len(conns) == len(pages) + 1
    assert {c["end_reason"] for c in conns} == {"search_complete"}
    searched = [books.delivered_indexes(c["conn_id"]) for c in conns[: len(pages)]]
    assert sorted(books.ids_of(np.concatenate(searched)).tolist()) == sorted(got)


def test_bounds_are_exact_and_pages_hold_every_tweet_once_newest_first(start_server):
    server = start_server("--rate", "1000", "--seed", "32")
    time.sleep(1.5)
    created = created_ids(server)
    # since_id and until_id are exclusive.
    (body,) = all_pages(
        server, query=ALL, since_id=created[200], until_id=created[295], max_results=100
    )
    assert ids_of([body]) == created[201:295][::-1]
    assert body["meta"] == {
        "newest_id": str(created[294]),
        "oldest_id": str(created[201]),
        "result_count": 94,
    }
    # start_time is inclusive, end_time exclusive (to the millisecond), 10 to a page.
    start_ms, end_ms = decode_ms(created[400]), decode_ms(created[560])
    bodies = all_pages(
        server, query=ALL, start_time=format_time(start_ms), end_time=format_time(end_ms)
    )
    wanted = [i for i in created if start_ms <= decode_ms(i) < end_ms][::-1]
    assert ids_of(bodies) == wanted
    assert [b["meta"]["result_count"] for b in bodies[:-1]] == [10] * (len(bodies) - 1)
    assert 0 < bodies[-1]["meta"]["result_count"] <= 10
    # since_id wins over start_time (X: "only since_id will be used").
    (body,) = all_pages(
        server,
        query=ALL,
        since_id=created[700],
        until_id=created[720],
        start_time=format_time(decode_ms(created[100])),
        max_results=100,
    )
    assert ids_of([body]) == created[701:720][::-1]
    # Polling: page back from now, then ask for what came since the newest seen.
    first = all_pages(server, query=ALL, since_id=created[900], max_results=100)
    newest = ids_of(first)[0]
    time.sleep(0.3)
    later = all_pages(server, query=ALL, since_id=newest, max_results=100)
    assert later[0]["meta"]["result_count"] > 0
    now = created_ids(server)
    polled = ids_of(later)[::-1] + ids_of(first)[::-1]
    assert sorted(polled) == sorted(set(polled))  # nothing twice
    assert ids_of(first)[::-1] == now[901 : now.index(newest) + 1]
    assert ids_of(later)[::-1] == now[now.index(newest) + 1 : now.index(ids_of(later)[0]) + 1]


def test_the_recent_window_scaled_excludes_older_tweets(tmp_path):
    """X's seven days times backfill_scale 0.0001: 60.48 s. The timeline is advanced by
    hand to 90 s of tweets, so what fell out of the window is known exactly."""
    config = ServerConfig(
        seed=33,
        profile=parse_profile(200),
        tokens=("t",),
        ledger=tmp_path / "l.sqlite",
        backfill_scale=0.0001,
    )
    state = StreamState(config)
    try:
        state.timeline.advance(90_000)
        timeline = state.timeline
        oldest = timeline.first_index_at(90_000 - 60_480)
        assert 0 < oldest < timeline.total
        found: list[int] = []
        params = {"query": ALL, "max_results": "100"}
        while True:
            page = asyncio.run(find(parse_params(params, state, state.matcher), state.tweets))
            found += page.indexes.tolist()
            if page.next_token is None:
                break
            params["next_token"] = page.next_token
        assert found == list(range(timeline.total - 1, oldest - 1, -1))
        ids, _ = timeline.locate(np.array([oldest - 1, oldest]))
        too_old = {"start_time": format_time(state.clock.t0_ms + 29_000), "since_id": str(ids[0])}
        for name, value in too_old.items():
            with pytest.raises(Problem) as refused:
                parse_params({"query": ALL, name: value}, state, state.matcher)
            (error,) = refused.value.body["errors"]
            assert list(error["parameters"]) == [name]
            assert "recent window" in error["message"]
        # The first tweet inside the window is a valid since_id (exclusive: one fewer).
        ask = parse_params({"query": ALL, "since_id": str(ids[1])}, state, state.matcher)
        assert ask.lo == oldest + 1
    finally:
        state.ledger.close()


def test_rate_limit_headers_count_down_then_429_until_the_window_slides(start_server):
    server = start_server("--rate", "100", "--search-limit", "3", "--search-window", "2")
    answers = [search(server, query="lang:en") for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.headers["x-rate-limit-remaining"] for r in answers] == ["2", "1", "0"]
    assert {r.headers["x-rate-limit-limit"] for r in answers} == {"3"}
    refused = search(server, query="lang:en")
    body = assert_problem(refused, 429)
    assert body["title"] == "Too Many Requests"
    reset = int(refused.headers["x-rate-limit-reset"])
    assert time.time() - 1 <= reset <= time.time() + 2
    assert refused.headers["x-rate-limit-remaining"] == "0"
    assert server.control("GET", "stats")["search"]["refused"] == 1
    time.sleep(max(0.0, reset + 1.1 - time.time()))
    again = search(server, query="lang:en")
    assert again.status_code == 200, again.text
    server.stop()

    books = server.ledger_reader()
    (event,) = books.events("refused")
    assert (event["name"], event["status"], event["endpoint"]) == ("TooManyRequests", 429, PATH)
    assert len(search_connections(books)) == 4  # the refused one is an event, not a row


def test_bad_input_is_a_400_naming_the_parameter_and_nothing_is_delivered(start_server):
    server = start_server("--rate", "200", "--seed", "35")
    time.sleep(0.3)
    other = search(server, query=ALL, max_results=10).json()["meta"]["next_token"]
    cases = [
        ({}, "query"),
        ({"query": "  "}, "query"),
        ({"query": "lang:en", "max_results": "5"}, "max_results"),
        ({"query": "lang:en", "max_results": "101"}, "max_results"),
        ({"query": "lang:en", "next_token": "not-a-token"}, "next_token"),
        ({"query": "lang:en", "next_token": other}, "next_token"),  # another query's
        ({"query": "lang:en", "pagination_token": other[:-1] + "a"}, "pagination_token"),
        ({"query": "(lang:en OR lang:es"}, "query"),
        ({"query": "lang:en OR"}, "query"),
        ({"query": "colour:red"}, "query"),
        ({"query": "-lang:en"}, "query"),
        ({"query": "a" * 513}, "query"),
        ({"query": "lang:en", "since_id": "12ab"}, "since_id"),
        ({"query": "lang:en", "since_id": "1"}, "since_id"),  # 2010: outside 7 days
        ({"query": "lang:en", "start_time": "2020-01-01T00:00:00Z"}, "start_time"),
        ({"query": "lang:en", "start_time": "yesterday"}, "start_time"),
        ({"query": "lang:en", "end_time": "2999-01-01T00:00:00Z"}, "end_time"),
        ({"query": "lang:en", "sort_order": "random"}, "sort_order"),
        ({"query": "lang:en", "colour": "red"}, "colour"),
    ]
    for params, name in cases:
        response = search(server, **params)
        body = assert_problem(response, 400)
        assert body["type"] == "https://api.twitter.com/2/problems/invalid-request"
        named = [p for e in body["errors"] for p in e["parameters"]]
        assert named == [name], (params, body)
        assert response.headers["x-rate-limit-limit"] == "450"
    position = search(server, query="lang:en )").json()["errors"][0]["message"]
    assert position.endswith("Unexpected ')' (at position 9)")
    for method in ("POST", "HEAD"):  # HEAD would put a page nobody was sent on the ledger
        other_method = requests.request(method, server.url + PATH, headers=server.headers)
        assert other_method.status_code == 405
    server.stop()

    books = server.ledger_reader()
    (only,) = search_connections(books)  # the search that made `other`, nothing else
    assert {d.conn_id for d in books.deliveries()} == {only["conn_id"]}


def test_ledger_rows_acked_reset_and_unacknowledged(start_server):
    """One row per answered request; its page acked, dropped in flight when the client
    resets before reading it, unknown when it neither reads nor leaves."""
    server = start_server("--rate", "2000", "--seed", "36", "--settle-timeout", "1")
    time.sleep(1)
    read = search(server, query=ALL, max_results=100).json()
    host, port = server.url.removeprefix("http://").split(":")
    target = f"{PATH}?query={quote(ALL)}&max_results=100"

    def stuck_client(answered: int) -> socket.socket:
        sock = raw_get(host, int(port), target, server.token, rcvbuf=1024)
        deadline = time.monotonic() + 10
        while server.control("GET", "stats")["search"]["answered"] < answered:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return sock

    resetting = stuck_client(2)
    time.sleep(0.2)  # the body is written, the client's window full
    resetting.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    resetting.close()  # RST
    silent = stuck_client(3)
    time.sleep(1.5)  # past the settle timeout
    silent.close()
    server.stop()

    books = server.ledger_reader()
    acked, reset, unknown = search_connections(books)
    assert acked["end_reason"] == "search_complete"
    assert acked["bytes_acked"] == acked["bytes_written"] > 0
    assert acked["params"] == f"query={ALL}&max_results=100"
    assert books.ids_of(books.delivered_indexes(acked["conn_id"])).tolist() == sorted(
        int(t["id"]) for t in read["data"]
    )
    assert reset["end_reason"] == "client_closed"
    assert reset["bytes_acked"] < reset["bytes_written"]
    assert not books.deliveries(reset["conn_id"])
    drops = [d for d in books.drops() if d.conn_id == reset["conn_id"]]
    assert {(d.reason, d.stage) for d in drops} == {("client_closed", "in_flight")}
    assert sum(len(d) for d in drops) == 100
    assert unknown["end_reason"] == "search_complete"
    assert unknown["bytes_acked"] < unknown["bytes_written"]
    runs = books.deliveries(unknown["conn_id"])
    assert {d.status for d in runs} == {"unknown"}
    assert sum(len(d) for d in runs) == 100


# The query language against a tiny reference evaluator -----------------------------------

TEXTS = ["alpha beta", "Beta, gamma!", "delta alpha gamma", "gamma-beta alpha"]
LANGS = ["en", "es", "en", "fr"]
USERS = ["ann", "Bob_1"]
USER_IDS = ["11", "22"]
MATCHER = Matcher(Pools(TEXTS, LANGS, USERS, USER_IDS))

words = st.sampled_from(["alpha", "beta", "gamma", "delta", "BETA", "omega"])
leaves = st.one_of(
    st.tuples(st.just("word"), words),
    st.tuples(st.just("phrase"), st.lists(words, min_size=1, max_size=2).map(" ".join)),
    st.tuples(st.just("lang"), st.sampled_from(["en", "es", "fr", "ja"])),
    st.tuples(st.just("from"), st.sampled_from(["ann", "bob_1", "BOB_1", "22", "zed"])),
    st.tuples(st.just("never"), st.sampled_from(["#alpha", "@ann", "$BETA", "is:retweet"])),
)


def _compound(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.just("and"), st.lists(inner, min_size=2, max_size=3)),
        st.tuples(st.just("or"), st.lists(inner, min_size=2, max_size=3)),
    )


trees = st.recursive(leaves, _compound, max_leaves=8)


def render(tree: tuple) -> str:
    """As a user would write it: parentheses only where AND-before-OR needs them."""
    kind, value = tree
    if kind in ("word", "never"):
        return value
    if kind == "phrase":
        return f'"{value}"'
    if kind in ("lang", "from"):
        return f"{kind}:{value}"
    if kind == "not":
        leaf = value[0] not in ("not", "and", "or")
        return "-" + (render(value) if leaf else f"({render(value)})")
    if kind == "and":
        return " ".join(f"({render(c)})" if c[0] == "or" else render(c) for c in value)
    return " OR ".join(render(c) for c in value)


def reference(tree: tuple, text: int, user: int) -> bool:
    kind, value = tree
    tokens = re.findall("[a-z0-9_]+", TEXTS[text].lower())
    if kind == "word":
        return value.lower() in tokens
    if kind == "phrase":
        wanted = value.lower().split()
        return any(tokens[i : i + len(wanted)] == wanted for i in range(len(tokens)))
    if kind == "lang":
        return LANGS[text] == value
    if kind == "from":
        return value.lower() in (USERS[user].lower(), USER_IDS[user])
    if kind == "never":
        return False
    if kind == "not":
        return not reference(value, text, user)
    combine = all if kind == "and" else any
    return combine(reference(c, text, user) for c in value)


def positive(tree: tuple, negated: bool = False) -> bool:
    kind, value = tree
    if kind == "not":
        return positive(value, not negated)
    if kind in ("and", "or"):
        return any(positive(c, negated) for c in value)
    return not negated


@settings(max_examples=400, deadline=None)
@given(trees)
def test_parser_and_matcher_agree_with_a_reference_evaluator(tree):
    query = render(tree)
    if not positive(tree):
        with pytest.raises(QueryError, match="not negated"):
            MATCHER.compile(query)
        return
    compiled = MATCHER.compile(query)
    texts, users = np.meshgrid(np.arange(len(TEXTS)), np.arange(len(USERS)), indexing="ij")
    got = compiled(texts.ravel(), users.ravel()).tolist()
    wanted = [reference(tree, t, u) for t, u in zip(texts.ravel(), users.ravel(), strict=True)]
    assert got == wanted, query
    assert compiled.possible == any(wanted)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab -()"OR:#@$lngfrom')), max_size=40) | st.text())
def test_any_query_compiles_or_is_a_query_error(query):
    """Whatever a client sends as ``query``: a 200 or a 400, never a 500."""
    try:
        compiled = MATCHER.compile(query)
    except QueryError as e:
        position = e.position
    else:
        assert compiled(np.arange(4), np.array([0, 1, 0, 1])).shape == (4,)
        return
    assert 1 <= position <= max(len(query), 512) + 1


def test_and_binds_tighter_than_or_and_errors_name_their_position():
    assert parse("a OR b c") == parse("a OR (b c)") != parse("(a OR b) c")
    for query, message in [
        ('"open', "Unterminated quoted phrase (at position 1)"),
        ("a ()", "Empty group (at position 4)"),
        ("a - b", "'-' must be followed by a term or a group (at position 3)"),
        ("OR a", "Unexpected 'OR' (at position 1)"),
        ("lang:x1 a", "'x1' is not a language code (at position 1)"),
        ("a " + "(" * 40 + "b" + ")" * 40, "nest deeper than 32"),
    ]:
        with pytest.raises(QueryError, match=re.escape(message)):
            parse(query)


def test_search_data_is_the_stream_rendering_of_the_same_index(tmp_path: Path):
    """tweets.choices picks what lines() renders: search matches what the stream sends."""
    state = StreamState(ServerConfig(seed=37, profile=parse_profile(500), ledger=tmp_path / "l"))
    try:
        state.timeline.advance(2_000)
        indexes = np.arange(state.timeline.total, dtype=np.int64)
        texts, users = state.tweets.choices(indexes)
        ids, unix_ms = state.timeline.locate(indexes)
        lines = state.tweets.lines(indexes, ids, unix_ms, None)
        for line, t, u in zip(lines, texts.tolist(), users.tolist(), strict=True):
            message = json.loads(line)
            assert (message["data"]["lang"], message["data"]["text"]) == state.tweets.text_pool[t]
            assert message["includes"]["users"] == [state.tweets.user_pool[u]]
    finally:
        state.ledger.close()
