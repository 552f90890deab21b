"""The article's naive loop, as users write it: ``requests`` reading the filtered stream
in a ``while True``, the token from the ``x_stream`` connection, each tweet into a table of
its own, ``except Exception`` around it all. Two ``streamstall_probe`` lines make it
measurable (docs/your-own-dag.md).

Commits a batch every 50 tweets or on a keep-alive (an empty line).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from pathlib import Path

import requests
from airflow.sdk import BaseHook, dag, get_current_context, task

from streamstall_probe import committed, started

BATCH = 50


def sink_path() -> Path:
    """This example's own store: a SQLite file in AIRFLOW_HOME."""
    return Path(os.environ.get("AIRFLOW_HOME", "/tmp")) / "examples" / "tweets.sqlite"


@dag(
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=2)},
)
def requests_loop() -> None:
    @task
    def stream() -> None:
        started()
        ti = get_current_context()["ti"]
        connection = BaseHook.get_connection("x_stream")
        url = f"{connection.host.rstrip('/')}/2/tweets/search/stream"
        headers = {"Authorization": f"Bearer {connection.password}"}
        path = sink_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60)
        db.execute(
            "CREATE TABLE IF NOT EXISTS tweets("
            "tweet_id INTEGER, text TEXT, run_id TEXT, try_number INTEGER)"
        )
        batch: list[tuple[int, str, str, int]] = []

        def flush() -> None:
            with db:  # one transaction
                db.executemany("INSERT INTO tweets VALUES (?, ?, ?, ?)", batch)
            committed(row[0] for row in batch)  # after our commit succeeded
            batch.clear()

        while True:
            try:
                with requests.get(url, headers=headers, stream=True, timeout=30) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        if line:
                            tweet = json.loads(line).get("data")
                            if tweet:
                                batch.append(
                                    (int(tweet["id"]), tweet["text"], ti.run_id, ti.try_number)
                                )
                        if len(batch) >= BATCH or (not line and batch):
                            flush()
            except Exception as error:  # the article's: log and reconnect "from now"
                print(f"stream ended: {error!r}; reconnecting")
                time.sleep(1)

    stream()


requests_loop()
