"""A streaming DAG written the way users write them: tweepy's ``StreamingClient`` inside a
``@task``, its bearer token from the ``x_stream`` connection, tweets into a table of its
own. The two ``streamstall_probe`` lines are all it needs to be measured by streamstall
(docs/your-own-dag.md); they do nothing when streamstall is not running it.

Commits a batch every 50 tweets or every half second, whichever first (keep-alives count:
a quiet stream still flushes).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from pathlib import Path

import tweepy
from airflow.sdk import BaseHook, dag, get_current_context, task

from streamstall_probe import committed, redirect_x_api, started

BATCH, EVERY = 50, 0.5  # tweets, seconds


def sink_path() -> Path:
    """This example's own store: a SQLite file in AIRFLOW_HOME."""
    return Path(os.environ.get("AIRFLOW_HOME", "/tmp")) / "examples" / "tweets.sqlite"


class SaveTweets(tweepy.StreamingClient):
    """Buffers tweets and commits them to the ``tweets`` table in batches."""

    def __init__(self, token: str, db: sqlite3.Connection, run_id: str, try_number: int) -> None:
        super().__init__(token, wait_on_rate_limit=True)
        self.db, self.run_id, self.try_number = db, run_id, try_number
        self.batch: list[tuple[int, str]] = []
        self.flushed = time.monotonic()

    def on_tweet(self, tweet: tweepy.Tweet) -> None:
        self.batch.append((tweet.id, tweet.text))
        self.flush_if_due()

    def on_keep_alive(self) -> None:
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if len(self.batch) >= BATCH or time.monotonic() - self.flushed >= EVERY:
            rows = [(i, text, self.run_id, self.try_number) for i, text in self.batch]
            with self.db:  # one transaction
                self.db.executemany("INSERT INTO tweets VALUES (?, ?, ?, ?)", rows)
            committed(i for i, _ in self.batch)  # after our commit succeeded
            self.batch, self.flushed = [], time.monotonic()


@dag(
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=2)},
)
def tweepy_stream() -> None:
    @task
    def stream() -> None:
        started()
        ti = get_current_context()["ti"]
        connection = BaseHook.get_connection("x_stream")
        path = sink_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60)
        db.execute(
            "CREATE TABLE IF NOT EXISTS tweets("
            "tweet_id INTEGER, text TEXT, run_id TEXT, try_number INTEGER)"
        )
        client = SaveTweets(connection.password, db, ti.run_id, ti.try_number)
        redirect_x_api(client.session, connection.host)  # X's host, or the fake's
        client.filter()  # blocks; tweepy reconnects with its own back-off

    stream()


tweepy_stream()
