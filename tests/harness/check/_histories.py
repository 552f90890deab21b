"""Random and hand-built run histories for checker tests, in memory and as real files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from fake_stream import snowflake
from fake_stream.ledger import Delivery, Drop, LedgerWriter
from harness.check.history import Commits, History, Op, TaskTry, window_for
from harness.layout import RunLayout
from harness.task.probe import Sink, create_sink

T0_MS = 1_790_000_000_000
T0_WALL = T0_MS / 1000
REASONS = ["no_consumer", "queue_overflow", "client_closed", "fault:cut", "server_shutdown"]


@dataclass
class Spec:
    """A run described plainly: what the oracle reads and what the builders turn into a
    History or a run folder."""

    slot_counts: list[int]
    deliveries: list[tuple[int, int, int, str]]  # (conn_id, first, stop, status)
    drops: list[tuple[int | None, int, int, str]]  # (conn_id, first, stop, reason)
    commits: list[tuple[float, int, int, list[int]]]  # (at, pid, try, tweet ids)
    opened_at: list[float]  # per connection
    stopped_at: float
    grace: float
    # (pid, try, outcome) starting and (unless killed: info) ending at T0, or
    # (pid, try, outcome, started_at, ended_at)
    tries: list[tuple] = field(default_factory=list)
    ending: dict | None = None  # run.json's: {"how", "stop_requested_at"}
    stop_marks: list[int] = field(default_factory=list)  # pids that read the stop request
    start_index: list[int] = field(default_factory=list)  # per connection: where it started

    def created(self) -> tuple[list[int], list[float]]:
        ids, times = [], []
        for slot, count in enumerate(self.slot_counts):
            for position in range(count):
                ids.append(snowflake.encode(T0_MS + slot, position))
                times.append(T0_WALL + slot / 1000)
        return ids, times


@st.composite
def specs(draw: st.DrawFn, max_slots: int = 40) -> Spec:
    counts = draw(st.lists(st.integers(0, 4), min_size=1, max_size=max_slots))
    total = sum(counts)
    duration = len(counts) / 1000
    index = st.integers(0, total)

    def run() -> tuple[int, int]:
        a, b = sorted((draw(index), draw(index)))
        return a, b

    connections = draw(st.integers(0, 3))
    deliveries = []
    for conn_id in range(1, connections + 1):
        for _ in range(draw(st.integers(0, 3))):
            a, b = run()
            deliveries.append((conn_id, a, b, draw(st.sampled_from(["acked", "acked", "unknown"]))))
    drops = []
    for _ in range(draw(st.integers(0, 4))):
        a, b = run()
        conn = draw(st.one_of(st.none(), st.integers(1, max(connections, 1))))
        drops.append((conn, a, b, draw(st.sampled_from(REASONS))))
    ids = [snowflake.encode(T0_MS + s, p) for s, c in enumerate(counts) for p in range(c)]
    foreign = st.integers(1, 2**40).map(lambda n: snowflake.encode(T0_MS - 10_000, n % 4096))
    tweet = st.sampled_from(ids) if ids else foreign
    commits = []
    at = T0_WALL
    for _ in range(draw(st.integers(0, 8))):
        at += draw(st.floats(0, duration + 0.01))
        batch = draw(st.lists(st.one_of(tweet, tweet, tweet, foreign), max_size=12))
        commits.append((at, draw(st.integers(100, 103)), draw(st.integers(1, 3)), batch))
    opened = sorted(T0_WALL + draw(st.floats(0, duration)) for _ in range(connections))
    stopped = T0_WALL + duration + draw(st.floats(0, 0.02))
    moment = st.floats(T0_WALL, T0_WALL + duration + 0.01)
    tries = []
    for i in range(draw(st.integers(0, 3))):
        outcome = draw(st.sampled_from(["ok", "fail", "info"]))
        started = draw(moment)
        ended = None if outcome == "info" else max(started, draw(moment))
        tries.append((100 + i, i + 1, outcome, started, ended))
    ending = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"how": st.sampled_from(["quiescent", "cap"]), "stop_requested_at": moment}
            ),
        )
    )
    marks = draw(st.lists(st.sampled_from([t[0] for t in tries]), max_size=2)) if tries else []
    starts = [draw(index) for _ in range(connections)]
    return Spec(
        counts,
        deliveries,
        drops,
        commits,
        opened,
        stopped,
        draw(st.sampled_from([0.0, 0.005, 0.02])),
        tries,
        ending,
        marks,
        starts,
    )


def history_of(spec: Spec) -> History:
    ids, times = spec.created()
    created_ids = np.array(ids, dtype=np.int64)
    created_at = np.array(times, dtype=np.float64)
    connections = [
        {"conn_id": i + 1, "opened_at": t, "closed_at": None, "start_index": start}
        for i, (t, start) in enumerate(zip(spec.opened_at, _starts(spec), strict=True))
    ]
    deliveries = [
        Delivery(c, seq, a, b, status) for seq, (c, a, b, status) in enumerate(spec.deliveries)
    ]
    drops = [Drop(c, a, b, reason, "queued") for c, a, b, reason in spec.drops]
    flat = [(at, pid, t, i) for at, pid, t, batch in spec.commits for i in batch]
    commits = Commits(
        tweet_ids=np.array([f[3] for f in flat], dtype=np.int64),
        committed_at=np.array([f[0] for f in flat], dtype=np.float64),
        pid=np.array([f[1] for f in flat], dtype=np.int64),
        try_number=np.array([f[2] for f in flat], dtype=np.int64),
    )
    tries = [
        TaskTry(pid, t, started, ended, outcome, None, None, {})
        for pid, t, outcome, started, ended in map(try_times, spec.tries)
    ]
    marks = [
        Op(T0_WALL, str(pid), "info", "mark", {"name": "stop_request"}) for pid in spec.stop_marks
    ]
    window = window_for(created_at, connections, None, spec.stopped_at, spec.grace)
    return History(
        created_ids,
        created_at,
        deliveries,
        drops,
        connections,
        commits,
        tries,
        marks,
        window,
        ending=spec.ending,
    )


def _starts(spec: Spec) -> list[int | None]:
    return spec.start_index or [None] * len(spec.opened_at)


def try_times(entry: tuple) -> tuple:
    """(pid, try, outcome, started_at, ended_at) of a Spec's try."""
    if len(entry) == 5:
        return entry
    pid, number, outcome = entry
    return pid, number, outcome, T0_WALL, None if outcome == "info" else T0_WALL


def write_run(spec: Spec, run_dir: Path) -> None:
    """The same run as real files, written by the real writers (the ledger may merge
    adjacent runs and the sink stamps real commit times: neither changes what the queue
    and sequence checkers count)."""
    layout = RunLayout(run_dir)
    ledger = LedgerWriter(layout.ledger, {"seed": 0, "t0_ms": T0_MS, "t0_wall": T0_WALL})
    ledger.created(0, np.array(spec.slot_counts, dtype=np.int64), 0)
    for conn_id, (opened, start) in enumerate(zip(spec.opened_at, _starts(spec), strict=True), 1):
        ledger.connection_opened(conn_id, token="t", opened_at=opened, start_index=start)
    for conn_id, first, stop, status in spec.deliveries:
        ledger.delivered(conn_id, first, stop, status)
    for conn_id, first, stop, reason in spec.drops:
        ledger.dropped(conn_id, first, stop, reason, "queued")
    ledger.close()
    run = {"stopped_at": spec.stopped_at, "grace": spec.grace, "ending": spec.ending}
    layout.run.write_text(json.dumps(run))
    create_sink(layout.sink)
    for _, pid, try_number, batch in spec.commits:
        sink = Sink(layout.sink, pid, try_number)
        sink.commit([(tweet_id, None) for tweet_id in batch])
        sink.close()
    layout.probe_dir.mkdir(exist_ok=True)
    for pid, try_number, outcome, started, ended in map(try_times, spec.tries):
        base = {"pid": pid, "try": try_number, "f": "task"}
        lines = [{**base, "time": started, "type": "invoke", "value": {}}]
        if pid in spec.stop_marks:
            mark = {"name": "stop_request"}
            lines.append({**base, "f": "mark", "time": started, "type": "info", "value": mark})
        if outcome != "info":
            how = "returned" if outcome == "ok" else "raised"
            lines.append({**base, "time": ended, "type": outcome, "value": {"how": how}})
        with (layout.probe_dir / f"host-{pid}.jsonl").open("a") as f:
            f.write("".join(json.dumps(line) + "\n" for line in lines))
