"""Tweet rendering: the bytes of each message, and their determinism (property-based)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections import Counter

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_stream import snowflake
from fake_stream.tweets import LOCALES, TweetFactory, iso_ms

T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
RULES = [TweetFactory.rule_suffix("1700000000000000001", "all")]
TWO_RULES = [
    TweetFactory.rule_suffix("1700000000000000001", "cats"),
    TweetFactory.rule_suffix("1700000000000000002", "dogs"),
]
ISO_MS = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def factory() -> TweetFactory:
    """The server's own pool sizes (one second of Faker work, shared by the module)."""
    return TweetFactory(1)


def small(seed: int) -> TweetFactory:
    return TweetFactory(seed, texts=256, users=64)


SMALL = {seed: small(seed) for seed in (1, 2)}


def batch(indexes: np.ndarray, per_ms: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Ids and creation ms for tweets ``indexes``, ``per_ms`` to a millisecond from T0."""
    ms = T0_MS + indexes // per_ms
    ids = snowflake.encode_array(ms, indexes % per_ms)
    return ids, ms


def render(f: TweetFactory, indexes: np.ndarray, rules: list[bytes] | None = RULES) -> list[bytes]:
    ids, ms = batch(indexes)
    return f.lines(indexes, ids, ms, rules)


# --- shape -------------------------------------------------------------------------------------


def test_lines_have_the_documented_shape(factory: TweetFactory) -> None:
    """Each line is one JSON object ending in CRLF with X's fields: string Snowflake id,
    edit history [id], created_at, lang, text, author_id matching includes.users[0].id,
    and matching_rules entries carrying both id and tag (tweepy needs ``tag``)."""
    indexes = np.arange(500, dtype=np.int64)
    ids, ms = batch(indexes)
    lines = factory.lines(indexes, ids, ms, RULES)
    assert len(lines) == 500
    for line, tweet_id in zip(lines, ids.tolist(), strict=True):
        assert line.endswith(b"\r\n")
        assert b"\n" not in line[:-2]
        assert b"\r" not in line[:-2]
        message = json.loads(line)
        assert set(message) == {"data", "includes", "matching_rules"}
        data = message["data"]
        assert set(data) == {
            "id",
            "text",
            "created_at",
            "author_id",
            "edit_history_tweet_ids",
            "lang",
        }
        assert data["id"] == str(tweet_id)
        assert data["edit_history_tweet_ids"] == [str(tweet_id)]
        assert isinstance(data["text"], str)
        assert 0 < len(data["text"]) <= 280
        assert data["lang"] in {lang for _, lang, _ in LOCALES}
        (user,) = message["includes"]["users"]
        assert set(user) == {"id", "name", "username"}
        assert user["id"] == data["author_id"]
        assert user["id"].isdigit()
        assert user["name"]
        assert user["username"]
        assert message["matching_rules"] == [{"id": "1700000000000000001", "tag": "all"}]


def test_sample_stream_lines_have_no_matching_rules() -> None:
    """The sample stream's messages (``rule_suffixes=None``) end after ``includes``, and
    carry the same tweet content as the filtered stream's at the same index."""
    indexes = np.arange(50, dtype=np.int64)
    sample = render(SMALL[1], indexes, None)
    filtered = render(SMALL[1], indexes, RULES)
    for s, f in zip(sample, filtered, strict=True):
        assert s.endswith(b"}\r\n")
        message = json.loads(s)
        assert set(message) == {"data", "includes"}
        without_rules = json.loads(f)
        del without_rules["matching_rules"]
        assert message == without_rules


def test_every_rule_gets_tweets(factory: TweetFactory) -> None:
    """With two rules each tweet matches exactly one, and both are used (roughly half each:
    the choice is a 64-bit hash; 2,000 fair coin flips stay within 1,000 +- 150 with
    probability 1 - 2e-11)."""
    lines = render(factory, np.arange(2000, dtype=np.int64), TWO_RULES)
    tags = Counter(json.loads(line)["matching_rules"][0]["tag"] for line in lines)
    assert set(tags) == {"cats", "dogs"}
    assert abs(tags["cats"] - 1000) <= 150


def test_text_pool_has_several_languages(factory: TweetFactory) -> None:
    """Texts come in every configured language (en, es, ja, fr), English the most common,
    and the Japanese ones really are Japanese (non-ASCII script)."""
    lines = render(factory, np.arange(4000, dtype=np.int64))
    messages = [orjson.loads(line) for line in lines]
    langs = Counter(m["data"]["lang"] for m in messages)
    assert set(langs) == {"en", "es", "ja", "fr"}
    assert langs.most_common(1)[0][0] == "en"
    ja = [m["data"]["text"] for m in messages if m["data"]["lang"] == "ja"]
    assert all(any(ord(c) > 0x3000 for c in text) for text in ja)


def test_unicode_texts_parse_with_orjson(factory: TweetFactory) -> None:
    """Non-ASCII texts are raw UTF-8 on the wire (as X sends them) and parse with orjson
    and the stdlib alike into the same objects."""
    lines = render(factory, np.arange(3000, dtype=np.int64))
    non_ascii = [line for line in lines if any(b > 0x7F for b in line)]
    assert len(non_ascii) > 100
    for line in non_ascii:
        line.decode("utf-8")  # strict: raises on any invalid sequence
        assert orjson.loads(line) == json.loads(line.decode("utf-8"))


def test_authors_and_texts_vary(factory: TweetFactory) -> None:
    """Tweets are not all alike: many distinct texts and authors over 1,000 tweets."""
    messages = [orjson.loads(line) for line in render(factory, np.arange(1000, dtype=np.int64))]
    assert len({m["data"]["text"] for m in messages}) > 800
    assert len({m["data"]["author_id"] for m in messages}) > 500


# --- created_at ------------------------------------------------------------------------------


@settings(deadline=None)  # numpy work per example; loaded CI machines
@given(st.integers(snowflake.TWEPOCH, 4_102_444_800_000))  # up to 2100-01-01
def test_iso_ms_is_the_exact_millisecond(unix_ms: int) -> None:
    """``iso_ms`` writes X's ``2021-11-15T19:08:05.123Z`` form of exactly that millisecond
    (no float rounding into the next second)."""
    text = iso_ms(unix_ms)
    assert ISO_MS.match(text)
    parsed = dt.datetime.fromisoformat(text.decode().replace("Z", "+00:00"))
    expected = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=unix_ms)
    assert parsed == expected


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(snowflake.TWEPOCH, 4_102_444_800_000), st.integers(0, 1000)),
        min_size=1,
        max_size=50,
    )
)
def test_created_at_is_the_ids_millisecond(pairs: list[tuple[int, int]]) -> None:
    """Each line's created_at is its id's decoded creation ms, in ISO form."""
    ms = np.array([m for m, _ in pairs], dtype=np.int64)
    ids = snowflake.encode_array(ms, np.array([p for _, p in pairs], dtype=np.int64))
    indexes = np.arange(len(pairs), dtype=np.int64)
    for line in SMALL[1].lines(indexes, ids, ms, RULES):
        data = orjson.loads(line)["data"]
        assert data["created_at"] == iso_ms(snowflake.decode_ms(int(data["id"]))).decode()


# --- determinism -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 10**9),
    st.integers(1, 600),
    st.sets(st.integers(1, 599), max_size=6),
)
def test_same_seed_same_bytes_whatever_the_batches(first: int, n: int, cut_set: set[int]) -> None:
    """A tweet's bytes depend on its index, id and time only: rendering [first, first+n)
    in one batch or in any split of batches, by this factory or by a fresh one with the
    same seed, gives identical bytes."""
    indexes = np.arange(first, first + n, dtype=np.int64)
    whole = render(SMALL[1], indexes)
    cuts = sorted(c for c in cut_set if c < n)
    bounds = [0, *cuts, n]
    parts: list[bytes] = []
    for a, b in itertools.pairwise(bounds):
        parts += render(SMALL[1], indexes[a:b])
    assert parts == whole


def test_fresh_factory_with_same_seed_gives_same_bytes() -> None:
    """Pools rebuilt from the same seed (a restarted server) render identical tweets."""
    indexes = np.arange(10_000, 10_300, dtype=np.int64)
    assert render(small(1), indexes) == render(SMALL[1], indexes)


def test_different_seeds_give_different_tweets() -> None:
    """Another seed gives other texts and authors at (nearly) every index: with 256 texts
    and 64 users, an index keeps both by chance with probability 1/16,384."""
    indexes = np.arange(300, dtype=np.int64)
    a = [orjson.loads(x)["data"] for x in render(SMALL[1], indexes)]
    b = [orjson.loads(x)["data"] for x in render(SMALL[2], indexes)]
    same = sum(
        x["text"] == y["text"] and x["author_id"] == y["author_id"]
        for x, y in zip(a, b, strict=True)
    )
    assert same <= 3
    assert {x["author_id"] for x in a}.isdisjoint({y["author_id"] for y in b})


def test_negative_seed_works() -> None:
    """The CLI accepts any integer seed; a negative one must build a factory too (numpy's
    seeding refuses negative integers) and differ from its absolute value."""
    indexes = np.arange(20, dtype=np.int64)
    assert render(small(-1), indexes) != render(small(1), indexes)
