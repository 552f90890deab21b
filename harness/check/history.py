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
from dataclasses import asdict, dataclass, field, is_dataclass
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
        slot, _, count = books.created_slots()
        total = books.created_total
        # The same bits as astype(int64), without a copy of tens of millions of ids.
        created_ids = books.created_ids().view(np.int64)
        t0_wall = books.meta.get("t0_wall", books.t0_ms / 1000)
        # Per slot, then repeated: the same float operations, on one value per slot.
        created_at = np.repeat(t0_wall + slot / 1000.0, count)
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
    commits, row_counts = _commits(layout.sink)
    tries, probe_ops = _probe(layout.probe_dir)
    ops = sorted(
        ledger_ops
        + probe_ops
        + _commit_ops(commits, row_counts)
        + _fault_ops(layout.airflow_faults),
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
            # asdict() would deep-copy every value first; the same JSON comes out without.
            record = {"time": op.time, "process": op.process, "type": op.type, "f": op.f}
            f.write(json.dumps({**record, "value": op.value}, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    """What asdict() then json's ``default=str`` made of a value JSON cannot hold."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


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


def _commits(path: Path) -> tuple[Commits, np.ndarray]:
    """The sink's commits, and how many tweets each of its rows holds."""
    if not path.is_file():
        raise RunError(f"{path}: no sink database")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("BEGIN")  # one snapshot for the rows, the count and the ids
        rows = db.execute(
            "SELECT committed_at, pid, try_number, count, typeof(tweet_ids), "
            "length(tweet_ids) FROM commits ORDER BY commit_id"
        ).fetchall()
        sink_rows = db.execute("SELECT count(*) FROM tweets").fetchone()[0]
        # Anything but blobs is read whole, to be measured (or refused) as it always was.
        blobs = None if all(r[4] == "blob" for r in rows) else _all_blobs(db)
    except sqlite3.DatabaseError as e:
        raise RunError(f"{path}: not a readable sink ({e})") from None
    counts = np.array([r[3] for r in rows], dtype=np.int64)
    sizes = [r[5] for r in rows] if blobs is None else [len(b) for b in blobs]
    if any(size != 8 * n for size, n in zip(sizes, counts.tolist(), strict=True)):
        raise RunError(f"{path}: a commits row's tweet_ids does not hold its count of ids")
    if int(counts.sum()) != sink_rows:
        raise RunError(
            f"{path}: {sink_rows} rows in tweets but {int(counts.sum())} in commits: "
            "something wrote to the sink without the probe"
        )
    try:
        ids = _packed_ids(db, sink_rows, len(rows)) if blobs is None else _joined(blobs)
    except sqlite3.DatabaseError as e:
        raise RunError(f"{path}: not a readable sink ({e})") from None
    db.close()
    commits = Commits(
        tweet_ids=ids,
        committed_at=np.repeat(np.array([r[0] for r in rows], dtype=np.float64), counts),
        pid=np.repeat(np.array([r[1] for r in rows], dtype=np.int64), counts),
        try_number=np.repeat(np.array([r[2] for r in rows], dtype=np.int64), counts),
    )
    return commits, counts


def _all_blobs(db: sqlite3.Connection) -> list[Any]:
    return [r[0] for r in db.execute("SELECT tweet_ids FROM commits ORDER BY commit_id")]


def _joined(blobs: list[Any]) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.int64) if blobs else np.zeros(0, np.int64)


def _packed_ids(db: sqlite3.Connection, total: int, rows: int) -> np.ndarray:
    """Every commit's packed int64 ids, end to end, read a few MB of blobs at a time into
    one array: the blobs of a big run are never all held at once (nor joined)."""
    ids = np.empty(total, dtype=np.int64)
    per_fetch = max(1, _FETCH_BYTES * rows // max(8 * total, 1))
    cursor = db.execute("SELECT tweet_ids FROM commits ORDER BY commit_id")
    at = 0
    while fetched := cursor.fetchmany(per_fetch):
        chunk = np.frombuffer(b"".join(r[0] for r in fetched), dtype=np.int64)
        ids[at : at + len(chunk)] = chunk
        at += len(chunk)
    return ids


_FETCH_BYTES = 4 << 20  # blobs per fetch, about: freed memory the next fetch reuses


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


def _commit_ops(commits: Commits, row_counts: np.ndarray) -> list[Op]:
    """One op per run of consecutive tweets with the same commit time and pid."""
    if not len(commits):
        return []
    starts = _commit_op_starts(commits, row_counts)
    ends = np.concatenate((starts[1:], [len(commits)]))
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


def _commit_op_starts(commits: Commits, row_counts: np.ndarray) -> np.ndarray:
    """Where each commit op starts, in tweets. A sink row is one time and pid, so the runs
    are found among the rows (empty ones split nothing), not among tens of millions of
    tweets; unless a time is not finite (inf - inf is no 0: every tweet its own op)."""
    row_starts = (np.cumsum(row_counts) - row_counts)[row_counts > 0]
    at, pid = commits.committed_at[row_starts], commits.pid[row_starts]
    if not np.isfinite(at).all():
        at, pid, row_starts = commits.committed_at, commits.pid, np.arange(len(commits))
    breaks = np.flatnonzero((np.diff(at) != 0) | (np.diff(pid) != 0)) + 1
    return row_starts[np.concatenate(([0], breaks))]


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
