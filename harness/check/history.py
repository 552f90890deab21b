"""One run's history: the server's ledger, the sink and the probe events, merged.

In Jepsen's spirit every tweet is created, then delivered on some connection (or dropped,
with the reason), then processed zero, one or more times; task tries, connections and
faults are operations in the same time line. Per-tweet facts stay as arrays (a run can
create tens of millions of tweets); everything else is a list of :class:`Op`.

:func:`load_history` reads a run folder and refuses anything it cannot trust: a missing,
truncated or inconsistent file raises :class:`RunError` naming the file and the problem.
It never guesses a number.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fake_stream.ledger import Delivery, Drop, LedgerError, LedgerReader
from harness.check.records import RunError, read_run, read_task_instances
from harness.layout import RunLayout

__all__ = [
    "DEFAULT_GRACE",
    "Commits",
    "History",
    "Op",
    "RunError",
    "TaskTry",
    "Window",
    "load_history",
    "window_for",
    "write_history",
]

#: Seconds before the stop that are not judged: tweets created then may still be in
#: flight to a healthy consumer.
DEFAULT_GRACE = 2.0


@dataclass(frozen=True)
class Op:
    """One operation of the history: ``type`` is invoke / ok / fail / info (Jepsen's)."""

    time: float
    process: str
    type: str
    f: str
    value: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    """The judged tweets: created in ``[start, stop)`` (UNIX s), i.e. indexes
    ``[first_index, stop_index)``. ``start`` is the first successful stream connect;
    ``stop`` is when the stream stopped creating (``run.json``'s ``created_until``), or
    for older runs the server's stop minus ``grace``."""

    start: float
    stop: float
    grace: float
    first_index: int
    stop_index: int

    @property
    def size(self) -> int:
        return max(self.stop_index - self.first_index, 0)


@dataclass
class Commits:
    """Every committed tweet, in commit order (a tweet committed twice appears twice)."""

    tweet_ids: np.ndarray  # int64
    committed_at: np.ndarray  # float64, UNIX s
    pid: np.ndarray  # int64
    try_number: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.tweet_ids)


@dataclass(frozen=True)
class TaskTry:
    """One task process as the probe saw it. ``outcome``: ok (returned), fail (raised),
    info (no end recorded: killed)."""

    pid: int
    try_number: int
    started_at: float
    ended_at: float | None
    outcome: str
    how: str | None
    error: str | None
    start: dict[str, Any]


@dataclass
class History:
    """Everything the checkers read. Tweet ``i`` of the stream has id ``created_ids[i]``
    and was created at ``created_at[i]``."""

    created_ids: np.ndarray
    created_at: np.ndarray
    deliveries: list[Delivery]
    drops: list[Drop]
    connections: list[dict[str, Any]]
    commits: Commits
    tries: list[TaskTry]
    ops: list[Op]
    window: Window
    airflow_tries: list[dict[str, Any]] | None = None
    #: How the run ended (``run.json``'s ``ending``, see harness/run/ending.py); None for
    #: runs that ended on the clock.
    ending: dict[str, Any] | None = None
    #: Derived arrays computed once and shared by checkers (see harness/check/checker/_tweets.py).
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def faults(self) -> list[Op]:
        """Fault operations: injected by the harness, or effects logged by the server."""
        return [op for op in self.ops if op.f in ("fault", "airflow_fault")]


def window_for(
    created_at: np.ndarray,
    connections: list[dict[str, Any]],
    start: float | None,
    stop: float,
    grace: float,
) -> Window:
    """The window: from ``start`` (default: the first stream connect) to ``stop - grace``."""
    if start is None:
        opened = [c["opened_at"] for c in connections if c.get("opened_at") is not None]
        start = min(opened) if opened else stop
    end = max(stop - grace, start)
    first = int(np.searchsorted(created_at, start, side="left"))
    last = int(np.searchsorted(created_at, end, side="left"))
    return Window(start, end, grace, first, last)


def load_history(run_dir: Path) -> History:
    """Read and cross-check a run folder (see :mod:`harness.layout`)."""
    layout = RunLayout(run_dir)
    run = read_run(layout.run) if layout.run.exists() else {}
    books = _ledger(layout.ledger)
    try:
        slot, first, count = books.created_slots()
        total = int(first[-1] + count[-1]) if len(first) else 0
        created_ids = books.ids_of(np.arange(total, dtype=np.int64)).astype(np.int64)
        t0_wall = books.meta.get("t0_wall", books.t0_ms / 1000)
        created_at = t0_wall + np.repeat(slot, count) / 1000.0
        connections = books.connections()
        deliveries, drops = books.deliveries(), books.drops()
        ledger_ops = _ledger_ops(books, connections)
    except LedgerError as e:
        raise RunError(str(e)) from None
    for run_ in [*deliveries, *drops]:
        if not 0 <= run_.first <= run_.stop <= total:
            raise RunError(f"{layout.ledger}: a run [{run_.first}, {run_.stop}) outside 0..{total}")
    # Since the runs end on the ledger, the stream stops creating at ``created_until`` and
    # serves on; before, it stopped at ``stopped_at`` and the last ``grace`` s were unjudged.
    stop = _first_given(run, "created_until", "stopped_at")
    stop = books.meta["stopped_at"] if stop is None else stop
    grace = run.get("grace", DEFAULT_GRACE)
    window = window_for(created_at, connections, run.get("window_start"), stop, grace)
    commits = _commits(layout.sink)
    tries, probe_ops = _probe(layout.probe_dir)
    ops = sorted(
        ledger_ops + probe_ops + _commit_ops(commits) + _fault_ops(layout.airflow_faults),
        key=lambda op: op.time,
    )
    airflow = read_task_instances(layout.task_instances) if layout.task_instances.exists() else None
    return History(
        created_ids,
        created_at,
        deliveries,
        drops,
        connections,
        commits,
        tries,
        ops,
        window,
        airflow,
        run.get("ending"),
    )


def write_history(history: History, path: Path) -> None:
    """The merged operations as JSON lines (tweets stay summarised per commit)."""
    with path.open("w") as f:
        for op in history.ops:
            f.write(json.dumps(asdict(op), default=str) + "\n")


# Readers ---------------------------------------------------------------------------------


def _first_given(run: dict[str, Any], *keys: str) -> Any:
    return next((run[k] for k in keys if run.get(k) is not None), None)


def _ledger(path: Path) -> LedgerReader:
    try:
        books = LedgerReader(path)
        books.created_slots()  # checks the created runs tile 0..total
    except LedgerError as e:
        raise RunError(str(e)) from None
    if not books.stopped_cleanly:
        raise RunError(
            f"{path}: the server did not stop cleanly (no meta.stopped_at): up to its last "
            "flush interval of records may be missing, so its counts cannot be trusted"
        )
    return books


def _commits(path: Path) -> Commits:
    if not path.is_file():
        raise RunError(f"{path}: no sink database")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = db.execute(
            "SELECT committed_at, pid, try_number, count, tweet_ids FROM commits ORDER BY commit_id"
        ).fetchall()
        sink_rows = db.execute("SELECT count(*) FROM tweets").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise RunError(f"{path}: not a readable sink ({e})") from None
    counts = np.array([r[3] for r in rows], dtype=np.int64)
    blobs = [r[4] for r in rows]
    if any(len(b) != 8 * n for b, n in zip(blobs, counts.tolist(), strict=True)):
        raise RunError(f"{path}: a commits row's tweet_ids does not hold its count of ids")
    if int(counts.sum()) != sink_rows:
        raise RunError(
            f"{path}: {sink_rows} rows in tweets but {int(counts.sum())} in commits: "
            "something wrote to the sink without the probe"
        )
    ids = np.frombuffer(b"".join(blobs), dtype=np.int64) if blobs else np.zeros(0, np.int64)
    return Commits(
        tweet_ids=ids,
        committed_at=np.repeat(np.array([r[0] for r in rows], dtype=np.float64), counts),
        pid=np.repeat(np.array([r[1] for r in rows], dtype=np.int64), counts),
        try_number=np.repeat(np.array([r[2] for r in rows], dtype=np.int64), counts),
    )


def _probe(directory: Path) -> tuple[list[TaskTry], list[Op]]:
    tries: list[TaskTry] = []
    ops: list[Op] = []
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        records = _jsonl(path)
        ops += [Op(r["time"], str(r["pid"]), r["type"], r["f"], r["value"]) for r in records]
        tries += _tries(path, records)
    return tries, ops


def _tries(path: Path, records: list[dict[str, Any]]) -> list[TaskTry]:
    """Pair each task start with its end (a process may run several tries in turn)."""
    out: list[TaskTry] = []
    open_: dict[str, Any] | None = None
    for r in [r for r in records if r["f"] == "task"]:
        if r["type"] == "invoke":
            if open_ is not None:
                out.append(_try(open_, None))
            open_ = r
        elif open_ is None:
            raise RunError(f"{path}: a task end ({r['type']}) with no start before it")
        else:
            out.append(_try(open_, r))
            open_ = None
    if open_ is not None:
        out.append(_try(open_, None))
    return out


def _try(start: dict[str, Any], end: dict[str, Any] | None) -> TaskTry:
    return TaskTry(
        pid=start["pid"],
        try_number=start["try"],
        started_at=start["time"],
        ended_at=None if end is None else end["time"],
        outcome="info" if end is None else end["type"],
        how=None if end is None else end["value"].get("how"),
        error=None if end is None else end["value"].get("error"),
        start=start["value"],
    )


_OP_KEYS = {"time", "pid", "try", "type", "f", "value"}
_OP_TYPES = {"invoke", "ok", "fail", "info"}


def _lines(path: Path) -> list[bytes]:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror})") from None
    if text and not text.endswith(b"\n"):
        raise RunError(f"{path}: the last record is truncated (no newline at the end)")
    return text.splitlines()


def _record(path: Path, number: int, line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError as e:  # not JSON, or not UTF-8
        raise RunError(f"{path}:{number}: not a JSON record ({e})") from None
    except RecursionError:
        raise RunError(f"{path}:{number}: not a JSON record (nested too deeply)") from None


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(_lines(path), start=1):
        record = _record(path, number, line)
        if (
            not isinstance(record, dict)
            or not set(record) >= _OP_KEYS
            or not _is_time(record["time"])
            or not _is_int(record["pid"])
            or not (record["try"] is None or _is_int(record["try"]))
            or record["type"] not in _OP_TYPES
            or not isinstance(record["f"], str)
            or not isinstance(record["value"], dict)
        ):
            raise RunError(
                f"{path}:{number}: not a probe record (needs {sorted(_OP_KEYS)}: a finite "
                f"time, integer pid and try, type one of {sorted(_OP_TYPES)}, an object value)"
            )
        records.append(record)
    return records


def _ledger_ops(books: LedgerReader, connections: list[dict[str, Any]]) -> list[Op]:
    ops = []
    for c in connections:
        ops.append(Op(c["opened_at"], "stream", "info", "connect", {"conn_id": c["conn_id"]}))
        if c.get("closed_at") is not None:
            value = {"conn_id": c["conn_id"], "end_reason": c["end_reason"]}
            ops.append(Op(c["closed_at"], "stream", "info", "disconnect", value))
    for e in books.events():
        value = {k: v for k, v in e.items() if k not in ("at", "kind")}
        ops.append(Op(e["at"], "stream", "info", e["kind"], value))
    return ops


def _commit_ops(commits: Commits) -> list[Op]:
    if not len(commits):
        return []
    breaks = np.flatnonzero((np.diff(commits.committed_at) != 0) | (np.diff(commits.pid) != 0)) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(commits)]))
    return [
        Op(
            float(commits.committed_at[s]),
            str(int(commits.pid[s])),
            "ok",
            "commit",
            {
                "try": int(commits.try_number[s]),
                "count": int(e - s),
                "first_id": int(commits.tweet_ids[s]),
                "last_id": int(commits.tweet_ids[e - 1]),
            },
        )
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    ]


def _fault_ops(path: Path) -> list[Op]:
    """The nemesis's operations: one JSON line per start/stop of an Airflow fault,
    ``{"time", "f": "start" | "stop", "fault": type, ...}``."""
    legacy = path.with_name("faults.jsonl")  # its name until the nemesis got its own
    if legacy.exists() and not path.exists():
        raise RunError(f"{legacy}: an older name of {path.name}; rename it to check this run")
    if not path.exists():
        return []
    ops = []
    for number, line in enumerate(_lines(path), start=1):
        record = _record(path, number, line)
        if not isinstance(record, dict) or not _is_time(record.get("time")):
            raise RunError(f"{path}:{number}: not a fault record (needs a finite time)")
        ops.append(Op(float(record.pop("time")), "nemesis", "info", "airflow_fault", record))
    return ops
