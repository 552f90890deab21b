"""scheduled_poll: no task that streams at all; short scheduled runs that poll X's
recent search from where the last one left off.

Each DAG run (Airflow's scheduler starts one every few seconds) reads
``GET /2/tweets/search/recent`` with ``since_id`` = the id it stored in the sink at its last
commit, pages through ``next_token`` (X answers newest first), then commits every tweet it
read *and* the new ``since_id`` (the newest id of the first page) in one transaction,
idempotently (``Sink.commit_new``): a run that dies anywhere before that commit leaves
``since_id`` where it was, and the next run reads the same tweets again. Overlapping
runs, a retry, or a run cleared by hand commit nothing twice and never move ``since_id``
back. The first run of all records a start point (now) before its first read, as
``exactly_once`` does.

What it costs: latency (a tweet waits up to the schedule's interval, plus the run's
start-up), and X's rate limit (450 requests per 15 minutes on recent search): a run
catching up after downtime needs one request per 100 tweets. A 429 ends the run
without a commit (``since_id`` stays; the next run asks again), so a backlog larger
than the budget is read again and again until the window's budget allows it (or
the 7-day window passes it by: then it is lost).
"""

from __future__ import annotations

from typing import Any

import requests

from harness.task.probe import Sink
from harness.task.resume import now_ms, position_at
from harness.task.variants.common import TaskContext, cpu_work

__all__ = ["CHECKPOINT", "MAX_RESULTS", "SEARCH_PATH", "commit_poll", "poll", "run"]

CHECKPOINT = "scheduled_poll.since_id"
SEARCH_PATH = "/2/tweets/search/recent"
MAX_RESULTS = 100  # X's most per page


def search_url(ctx: TaskContext) -> str:
    """The recent-search endpoint of the API whose stream the connection names."""
    return str(ctx.param("stream_url")).split("/2/", 1)[0] + SEARCH_PATH


def poll(ctx: TaskContext, since_id: int) -> tuple[list[dict[str, Any]], int | None]:
    """Every tweet newer than ``since_id`` matching the query, newest first, paged
    through; and the newest id (None: nothing new). Raises ``requests.HTTPError`` on a
    refusal (a 429 once the rate limit is spent)."""
    params: dict[str, str] = {
        "query": str(ctx.param("search_query")),
        "since_id": str(since_id),
        "max_results": str(MAX_RESULTS),
    }
    tweets: list[dict[str, Any]] = []
    newest: int | None = None
    with requests.Session() as http:
        while True:
            response = http.get(search_url(ctx), headers=ctx.headers(), params=params, timeout=30)
            response.raise_for_status()
            body = response.json()
            meta = body.get("meta", {})
            if newest is None and meta.get("newest_id"):
                newest = int(meta["newest_id"])
            tweets.extend(body.get("data", []))
            ctx.probe.mark(
                "search_page",
                results=int(meta.get("result_count", 0)),
                remaining=response.headers.get("x-rate-limit-remaining"),
            )
            if not meta.get("next_token"):
                return tweets, newest
            params["next_token"] = str(meta["next_token"])


def commit_poll(sink: Sink, rows: list[tuple[int, float]], since_id: int) -> int:
    """Commit one poll's tweets with the new ``since_id``, in one transaction,
    idempotently; the stored ``since_id`` afterwards (never moved back)."""
    stored = sink.commit_new(rows, (CHECKPOINT, since_id))[1]
    assert stored is not None  # since_id is not None
    return int(stored)


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    sink = probe.open_sink()
    since_id = int(sink.checkpoint_or_start(CHECKPOINT, position_at(now_ms())))
    probe.started(logical_date=ctx.logical_date, resumed_from=since_id)
    cpu_us = float(ctx.param("cpu_us"))
    try:
        tweets, newest = poll(ctx, since_id)
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else None
        reset = e.response.headers.get("x-rate-limit-reset") if e.response is not None else None
        probe.mark("search_error", status=status, reset=reset)
        sink.close()
        if status == 429:
            return  # since_id stays: the next run asks again, when the budget allows
        raise
    rows = [(int(t["id"]), cpu_work(t["text"], cpu_us)) for t in tweets]
    commit_poll(sink, rows, max(since_id, newest or since_id))
    sink.close()
