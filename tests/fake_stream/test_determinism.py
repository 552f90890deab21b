"""Same seed, same stream: live servers in separate processes, read by real HTTP clients.

Each test starts its servers, waits about a second so they have created tweets, then
connects with ``backfill_minutes=1`` (which replays from the very first tweet, since the
servers are younger than a minute) and reads the first N tweets. One server is read with
``requests`` (stream=True, iter_lines), the other with ``httpx``, so agreement cannot come
from a shared client quirk.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
import requests

from fake_stream import snowflake
from fake_stream.tweets import iso_ms
from harness.run.services import StreamServerProcess

N = 3000  # tweets read from each server: ~1.5 s of stream at 2,000/s, replay and live
RATE = "2000"
REPLAY = {"backfill_minutes": "1"}

pytestmark = pytest.mark.slow  # each test runs two or three servers for a few seconds


def start_all(start_server, *arg_lists: list[str]) -> list[StreamServerProcess]:
    """Start servers one after the other (the fixture names ledgers by count, so it is
    not meant to be called from several threads at once)."""
    return [start_server(*args) for args in arg_lists]


def read_requests(server: StreamServerProcess, n: int) -> list[dict[str, Any]]:
    """The first ``n`` tweet messages of a backfilled connection, via requests."""
    tweets: list[dict[str, Any]] = []
    with requests.get(
        server.stream_url, headers=server.headers, params=REPLAY, stream=True, timeout=20
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines(chunk_size=65536, delimiter=b"\r\n"):
            if line:
                message = orjson.loads(line)
                if "data" in message:
                    tweets.append(message)
            if len(tweets) >= n:
                break
    assert len(tweets) == n
    return tweets


def read_httpx(server: StreamServerProcess, n: int) -> list[dict[str, Any]]:
    """The same through httpx's streaming API."""
    tweets: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", server.stream_url, headers=server.headers, params=REPLAY, timeout=20
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.strip():
                message = orjson.loads(line)
                if "data" in message:
                    tweets.append(message)
            if len(tweets) >= n:
                break
    assert len(tweets) == n
    return tweets


def read_both(a: StreamServerProcess, b: StreamServerProcess, n: int = N) -> tuple[list, list]:
    time.sleep(1.0)  # let both create ~2,000 tweets before the replaying connects
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(read_requests, a, n)
        fb = pool.submit(read_httpx, b, n)
        return fa.result(), fb.result()


def content(tweet: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """What a tweet says and who says it (everything but its id and time)."""
    data = tweet["data"]
    return data["text"], data["lang"], data["author_id"], tweet["includes"]["users"][0]


def check_stream_from_start(tweets: list[dict[str, Any]], t0_ms: int) -> None:
    """The replay began at the stream's first tweet and goes forward in creation order,
    each created_at being its id's millisecond."""
    ids = [int(t["data"]["id"]) for t in tweets]
    assert ids[0] == snowflake.encode(t0_ms, 0)  # 2,000/s: two tweets in slot 0
    assert all(a < b for a, b in itertools.pairwise(ids))
    for tweet, tweet_id in zip(tweets, ids, strict=True):
        assert tweet["data"]["created_at"] == iso_ms(snowflake.decode_ms(tweet_id)).decode()


def test_same_seed_rate_and_t0_give_identical_streams(start_server) -> None:
    """Two servers, same --seed, --rate and pinned --t0-ms: the same messages (ids, texts,
    authors, times, matching rules) at the same stream positions. A third with another
    seed has the same ids (uniform arrivals do not depend on the seed) but other texts."""
    t0_ms = int(time.time() * 1000)
    common = ["--rate", RATE, "--t0-ms", str(t0_ms)]
    a, b, c = start_all(
        start_server,
        ["--seed", "7", *common],
        ["--seed", "7", *common],
        ["--seed", "8", *common],
    )
    assert a.info["t0_ms"] == b.info["t0_ms"] == c.info["t0_ms"] == t0_ms
    tweets_a, tweets_b = read_both(a, b)
    check_stream_from_start(tweets_a, t0_ms)
    assert tweets_a == tweets_b
    assert len({t["data"]["text"] for t in tweets_a}) > N // 2  # not one text repeated

    tweets_c = read_requests(c, N)
    check_stream_from_start(tweets_c, t0_ms)
    assert [t["data"]["id"] for t in tweets_c] == [t["data"]["id"] for t in tweets_a]
    # 4,096 texts per pool: equal texts at the same index by chance are ~1 in 4,096.
    same_text = sum(
        x["data"]["text"] == y["data"]["text"] for x, y in zip(tweets_a, tweets_c, strict=True)
    )
    assert same_text < N // 100


def test_same_seed_without_pinned_t0_gives_same_content(start_server) -> None:
    """Without --t0-ms each server's clock starts at its own start: ids differ by the
    servers' start times, but each tweet sits at the same slot (ms after start) and
    position, with the same text and author."""
    a, b = start_all(start_server, ["--seed", "7", "--rate", RATE], ["--seed", "7", "--rate", RATE])
    tweets_a, tweets_b = read_both(a, b)
    check_stream_from_start(tweets_a, a.info["t0_ms"])
    check_stream_from_start(tweets_b, b.info["t0_ms"])
    assert [content(t) for t in tweets_a] == [content(t) for t in tweets_b]
    for x, y in zip(tweets_a, tweets_b, strict=True):
        id_a, id_b = int(x["data"]["id"]), int(y["data"]["id"])
        assert snowflake.decode_ms(id_a) - a.info["t0_ms"] == (
            snowflake.decode_ms(id_b) - b.info["t0_ms"]
        )
        assert snowflake.decode_position(id_a) == snowflake.decode_position(id_b)
        assert [r["tag"] for r in x["matching_rules"]] == [r["tag"] for r in y["matching_rules"]]


def test_poisson_arrivals_are_reproducible_live(start_server) -> None:
    """With Poisson arrivals the ids themselves are random (how many tweets each ms holds);
    two servers with the same seed, whose generator loops tick at unrelated moments, must
    still create the same ids."""
    t0_ms = int(time.time() * 1000)
    profile = '{"kind": "poisson", "rate": 2000}'
    common = ["--seed", "11", "--profile", profile, "--t0-ms", str(t0_ms)]
    a, b = start_all(start_server, common, common)
    tweets_a, tweets_b = read_both(a, b)
    ids_a = [int(t["data"]["id"]) for t in tweets_a]
    assert ids_a == [int(t["data"]["id"]) for t in tweets_b]
    assert tweets_a == tweets_b
    # Poisson, not uniform: some milliseconds hold 0 tweets and some hold 4 or more
    # (P(0) = e^-2 = 0.14, P(>=4) = 0.14 per ms at 2 tweets/ms).
    per_ms: dict[int, int] = {}
    for tweet_id in ids_a:
        per_ms[snowflake.decode_ms(tweet_id)] = per_ms.get(snowflake.decode_ms(tweet_id), 0) + 1
    span = max(per_ms) - min(per_ms) + 1
    assert len(per_ms) < 0.95 * span
    assert max(per_ms.values()) >= 4
