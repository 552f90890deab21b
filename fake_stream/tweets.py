"""Tweets as X sends them, rendered fast enough to replay the 2013 record.

Faker is far too slow to call per tweet (tens of microseconds), so :class:`TweetFactory`
builds pools of texts and users once, from the seed, and pre-serialises every fragment
that does not depend on the tweet's id or time. Rendering a tweet is then one join of nine
byte strings; which text, author and matching rule a tweet gets is a hash of
``(seed, tweet index)``, so the same seed always gives the same tweet at the same place in
the stream, whatever batches the server happens to render it in.

One rendered message (keys in this order; JSON objects are unordered)::

    {"data":{"id":"<id>","edit_history_tweet_ids":["<id>"],"created_at":"<iso ms>Z",
     "lang":"en","text":"...","author_id":"<user id>"},
     "includes":{"users":[{"id":"<user id>","name":"...","username":"..."}]},
     "matching_rules":[{"id":"<rule id>","tag":"<tag>"}]}\\r\\n

The sample stream's messages are the same without ``matching_rules``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import orjson
from faker import Faker

__all__ = [
    "CREATED_AT",
    "EDIT_HISTORY",
    "LOCALES",
    "PREFIX",
    "SAMPLE_END",
    "TweetFactory",
    "TweetSource",
    "created_at",
    "iso_ms",
    "rule_choice",
]

#: (Faker locale, X ``lang`` code, share of texts).
LOCALES: tuple[tuple[str, str, int], ...] = (
    ("en_US", "en", 6),
    ("es_ES", "es", 2),
    ("ja_JP", "ja", 1),
    ("fr_FR", "fr", 1),
)

#: The fragments of a message before its text: with the id (twice) and ``created_at``
#: between them (shared with :mod:`fake_stream.replay`).
PREFIX = b'{"data":{"id":"'
EDIT_HISTORY = b'","edit_history_tweet_ids":["'
CREATED_AT = b'"],"created_at":"'
#: The end of a sample-stream message (a filtered one ends with its ``matching_rules``).
SAMPLE_END = b"}\r\n"


def iso_ms(unix_ms: int) -> bytes:
    """``created_at`` as X writes it, to the millisecond: ``2021-11-15T19:08:05.123Z``."""
    moment = dt.datetime.fromtimestamp(unix_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.").encode() + b"%03dZ" % (unix_ms % 1000)


def created_at(cache: dict[int, bytes], unix_ms: np.ndarray) -> dict[int, bytes]:
    """``cache`` holding :func:`iso_ms` of every millisecond in ``unix_ms`` (a batch of
    tweets shares a few milliseconds; formatting one costs microseconds)."""
    if len(cache) > 100_000:
        cache.clear()
    for ms in np.unique(unix_ms).tolist():
        if ms not in cache:
            cache[ms] = iso_ms(ms)
    return cache


def _username(name: str) -> str:
    """X usernames are 1-15 letters, digits and underscores; Faker's may hold dots."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)[:15]


def rule_choice(indexes: np.ndarray, seed: int, rules: int) -> list[int]:
    """Which of ``rules`` current rules each tweet at ``indexes`` matches: a hash of its
    position, so a tweet matches the same rule whenever it is sent."""
    return _rule_of(_mix(indexes, seed), rules)


def _rule_of(h: np.ndarray, rules: int) -> list[int]:
    return ((h >> np.uint64(40)) % np.uint64(rules)).tolist()


def _mix(values: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of ``values`` salted with ``seed``: a cheap, well-spread hash."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(seed & (2**64 - 1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class TweetSource(Protocol):
    """What the server asks of a stream's tweets: generated (:class:`TweetFactory`) or a
    capture's (:class:`fake_stream.replay.ReplayTweets`)."""

    seed: int
    #: Text pool entry ``i`` is ``(lang, text)``; user pool entry ``j`` is ``{"id", "name",
    #: "username"}`` (search matches queries against them).
    text_pool: list[tuple[str, str]]
    user_pool: list[dict[str, str]]

    def lines(
        self,
        indexes: np.ndarray,
        ids: np.ndarray,
        unix_ms: np.ndarray,
        rule_suffixes: Sequence[bytes] | None,
    ) -> list[bytes]:
        """The tweets at stream positions ``indexes`` as wire lines."""
        ...

    def choices(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which text and author (pool entries) the tweets at ``indexes`` have."""
        ...


class TweetFactory:
    """Deterministic tweet content for one seed.

    :param seed: the stream's seed; the pools and every per-tweet choice derive from it.
    :param texts: size of the text pool.
    :param users: size of the author pool.
    """

    def __init__(self, seed: int, texts: int = 4096, users: int = 1024) -> None:
        self.seed = seed
        fake = Faker([locale for locale, _, _ in LOCALES])
        fake.seed_instance(seed)
        plan = [(loc, lang) for loc, lang, share in LOCALES for _ in range(share)]
        self._texts = []
        #: The pools as plain values (search matches queries against them): text pool entry
        #: ``i`` is ``(lang, text)``, user pool entry ``j`` is ``{"id", "name", "username"}``.
        self.text_pool: list[tuple[str, str]] = []
        self.user_pool: list[dict[str, str]] = []
        for i in range(texts):
            locale, lang = plan[i % len(plan)]
            text = fake[locale].text(max_nb_chars=280).replace("\n", " ")
            self.text_pool.append((lang, text))
            self._texts.append(b'","lang":"' + lang.encode() + b'","text":' + orjson.dumps(text))
        rng = np.random.Generator(np.random.PCG64([seed & (2**64 - 1), 0x05E7]))
        user_ids = rng.integers(10**17, 10**18, size=users).tolist()
        self._users = []
        for user_id in user_ids:
            locale = plan[len(self._users) % len(plan)][0]
            user = {
                "id": str(user_id),
                "name": fake[locale].name(),
                "username": _username(fake.user_name()),
            }
            self.user_pool.append(user)
            self._users.append(
                b',"author_id":"'
                + user["id"].encode()
                + b'"},"includes":{"users":['
                + orjson.dumps(user)
                + b"]}"
            )
        self._created_at: dict[int, bytes] = {}

    def lines(
        self,
        indexes: np.ndarray,
        ids: np.ndarray,
        unix_ms: np.ndarray,
        rule_suffixes: Sequence[bytes] | None,
    ) -> list[bytes]:
        """Render the tweets at stream positions ``indexes`` as wire lines.

        :param ids: their Snowflake ids; ``unix_ms`` their creation times.
        :param rule_suffixes: one pre-rendered ``matching_rules`` ending per rule of the
            filtered stream (see :meth:`rule_suffix`), or ``None`` for the sample stream.
        """
        h, text_arr, user_arr = self._picks(indexes)
        text_of, user_of = text_arr.tolist(), user_arr.tolist()
        if rule_suffixes:
            suffixes = [rule_suffixes[r] for r in _rule_of(h, len(rule_suffixes))]
        else:
            suffixes = [SAMPLE_END] * len(text_of)
        created = created_at(self._created_at, unix_ms)
        texts, users = self._texts, self._users
        out = []
        for tweet_id, ms, t, u, end in zip(
            ids.tolist(), unix_ms.tolist(), text_of, user_of, suffixes, strict=True
        ):
            idb = b"%d" % tweet_id
            out.append(
                b"".join(
                    (
                        PREFIX,
                        idb,
                        EDIT_HISTORY,
                        idb,
                        CREATED_AT,
                        created[ms],
                        texts[t],
                        users[u],
                        end,
                    )
                )
            )
        return out

    def choices(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which text (of :attr:`text_pool`) and author (of :attr:`user_pool`) the tweets
        at ``indexes`` have: the same hash :meth:`lines` renders them with."""
        _, text_of, user_of = self._picks(indexes)
        return text_of, user_of

    def _picks(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = _mix(indexes, self.seed)
        text_of = (h % np.uint64(len(self._texts))).astype(np.int64)
        user_of = ((h >> np.uint64(20)) % np.uint64(len(self._users))).astype(np.int64)
        return h, text_of, user_of

    @staticmethod
    def rule_suffix(rule_id: str, tag: str) -> bytes:
        """The ``matching_rules`` ending of a filtered-stream message for one rule."""
        return b',"matching_rules":[' + orjson.dumps({"id": rule_id, "tag": tag}) + b"]}\r\n"
