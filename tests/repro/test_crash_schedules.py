"""Crash schedules: hypothesis drives the checkpoint protocols of ``checkpoint`` (the
article's example 2) and ``exactly_once`` through interleavings of their steps with
crashes, restarts and worker moves (issue 8, "Property-based crash schedules").

No Airflow and no server. Each state machine runs the variant's loop one protocol step at
a time, calling the variant's own step functions in the order its ``run`` calls them
(``harness.task.variants.checkpoint``: ``load_state``, ``commit_batch``, ``open_state``,
``dump_state``; ``harness.task.variants.exactly_once``: ``resume_point``, ``commit_batch``), and
can crash before any step. The sink is a real :class:`~harness.task.probe.Sink` on a SQLite file
and the state file a real file on a folder per worker (its "local disk"), all in a
``tempfile`` folder per example (a state machine gets no pytest fixture per example).

The stream is what the protocols assume of it, not the fake server: ids 1, 2, 3, ... in
order, kept forever. A connection with ``since_id=s`` delivers every id above ``s``; one
without delivers what is created after it connects (the live stream); reading waits for
the next tweet (the stream creates it). A crash is a SIGKILL: what the try held in memory
(its batch, the state file's unflushed buffer) is gone, what reached the sink or the disk
stays. (A crash inside ``Sink.commit`` is a crash before it: SQLite commits the whole
transaction or none of it, which ``tests/harness/task/test_probe.py`` checks with real kills.)

Rules (a schedule is a sequence of them):

- ``run(until)``: if no try is running, one starts (Airflow's retry, or the next run);
  then the loop runs until it is about to take step ``until`` again, so that a ``crash``
  next lands just before that step. ``checkpoint``'s steps: ``read`` (a tweet), ``commit``
  (the full batch), ``open`` (the state file, which truncates it), ``dump`` (the id into
  it); ``exactly_once``'s: ``read`` and ``commit``.
- ``crash``; ``crash_mid_dump(written)`` (``checkpoint``: dies inside ``dump_state`` with
  ``written`` characters on disk).
- ``connection_ends`` (the stream drops; the loop commits what it holds and reconnects),
  ``emit(n)`` (the stream creates tweets nobody reads yet), ``move_worker`` (the next try
  runs on another worker: an empty disk).
- ``exactly_once`` only: ``commit_by_age`` (``MAX_BATCH_AGE`` passed), ``try_ends``
  (``try_seconds`` or ``on_kill``: commit and return), ``stream_repeats(k)`` (a replay);
  and overlapping tries: ``orphaned`` (Airflow gives up on the running try and starts a
  retry while the try's process streams on), ``orphan_runs(until)``, ``orphan_ends``, and
  ``orphan_commit_races(at)``: the retry's whole commit lands before the orphan's commit's
  ``at``-th call into the sink, so a commit made of a read and a write is split by the
  other's (issue 15: the read-then-write commit this found committed tweets twice and
  moved the checkpoint back).

Each machine keeps a trace of what the variant's code did, with what it printed; a broken
property's message carries it. Two kinds of test:

- *facts*: the machine runs many schedules and must never fail. For ``exactly_once`` that
  is its claim (nothing committed twice, nothing committed lost, ever); for ``checkpoint``
  it is what the variant really does. Each also checks the schedules reached every crash
  point and outcome it is about (``REACHED``).
- *found*: a property the variant does not have. Hypothesis must find a schedule breaking
  it (``run_state_machine_as_test`` inside ``pytest.raises``), and the test checks the
  trace of the shrunk schedule for the steps that caused it. Each docstring quotes the
  schedule and trace hypothesis 6.170 shrank it to with these settings.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness.task.probe import Sink, create_sink
from harness.task.variants import VARIANTS, checkpoint, exactly_once

pytestmark = pytest.mark.repro

#: Deterministic: ``derandomize`` (the same schedules on every run, so CI is stable) and no
#: example database (nothing written to the tree, no run depending on an earlier one).
#: The facts: 100 schedules of 30 rules reach every crash point and outcome of both
#: protocols (``REACHED`` checks it; most of them dozens of times, the rarest, a batch
#: with repeats, 5 times) in about 1 s each, 3 s on 2 cores busy with Airflow.
FACTS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow],
)
#: The searches: the breaking schedules are 3 to 6 rules long. 15 rules per example finds
#: each within about 200 examples; the shrinking after it (~500 more) costs most of each
#: test's 2 to 5 s, and cheaper for shorter examples (at 25, some shrinks also kept a run
#: of useless ``move_worker`` in front). 1,000 examples bound a regression (nothing
#: found) to ~10 s. No explain phase: its report is not used.
SEARCH = settings(
    FACTS,
    max_examples=1000,
    stateful_step_count=15,
    phases=[Phase.generate, Phase.shrink],
    report_multiple_bugs=False,
)

#: Where the examples' folders go: a tmpfs when there is one (a real file system whose
#: syncs cost nothing, so a disk busy with Airflow tests alongside does not set the run
#: time: the sink syncs when its last connection closes), else the default temp folder.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None

#: Crash points and outcomes the facts schedules reached: ``"<machine>: <what>"`` -> count.
REACHED: Counter[str] = Counter()


@functools.cache
def empty_sink() -> Path:
    """An empty sink, made once (``create_sink`` syncs it); each example copies it."""
    folder = tempfile.mkdtemp(prefix="streamstall-crash-", dir=SCRATCH)
    atexit.register(shutil.rmtree, folder, True)
    create_sink(Path(folder) / "sink.sqlite")
    return Path(folder) / "sink.sqlite"


def printed(call: Callable[[], Any]) -> tuple[Any, str]:
    """``call()``'s result and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = call()
    return result, out.getvalue().strip()


class ProtocolMachine(RuleBasedStateMachine):
    """What both machines share: a folder per example holding the sink and each worker's
    disk, the stream (``newest``: the last id created), the tries, the trace."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="streamstall-crash-", dir=SCRATCH))
        self.sink_path = self.root / "sink.sqlite"
        shutil.copyfile(empty_sink(), self.sink_path)
        self.db = sqlite3.connect(self.sink_path)
        self.disks = 0
        self.disk = self.new_disk()
        self.newest = 0
        self.tries = 0
        self.batch = 1
        self.rows = 0
        self.trace: list[str] = []
        #: The newest id when the first try connected: the window starts after it, as the
        #: checker's starts at the first connection.
        self.floor: int | None = None

    def new_disk(self) -> Path:
        self.disks += 1
        disk = self.root / f"worker-{self.disks}"
        disk.mkdir()
        return disk

    def open_sink(self) -> Sink:
        self.tries += 1
        return Sink(self.sink_path, pid=os.getpid(), try_number=self.tries)

    def connect(self, since_id: int | None) -> int:
        """A new connection's position: the id after which it delivers."""
        if self.floor is None:
            self.floor = self.newest
        return self.newest if since_id is None else since_id

    def read(self, cursor: int) -> int:
        """The id a connection at ``cursor`` delivers next (the stream creates it if
        need be)."""
        self.newest = max(self.newest, cursor + 1)
        self.log(f"read {cursor + 1}")
        return cursor + 1

    def log(self, line: str) -> None:
        self.trace.append(line)

    def reached(self, what: str) -> None:
        REACHED[f"{type(self).__name__}: {what}"] += 1

    def check(self, ok: bool, message: str) -> None:
        """Assert ``ok``; the message carries the trace (a plain ``AssertionError``: its
        message is not rewritten by pytest)."""
        if not ok:
            raise AssertionError(message + "\ntrace:\n  " + "\n  ".join(self.trace))

    def committed(self) -> list[int]:
        return [row[0] for row in self.db.execute("SELECT tweet_id FROM tweets ORDER BY rowid")]

    def twice(self) -> list[int]:
        sql = "SELECT tweet_id FROM tweets GROUP BY tweet_id HAVING count(*) > 1"
        return [row[0] for row in self.db.execute(sql)]

    def lost_after(self, floor: int) -> list[int]:
        """Ids above ``floor`` never committed although a later id was."""
        ids = set(self.committed())
        return [i for i in range(floor + 1, max(ids, default=0)) if i not in ids]

    @initialize(batch=st.integers(1, 3))
    def tweets_per_batch(self, batch: int) -> None:
        self.batch = batch
        self.log(f"batch={batch}")

    @rule(n=st.integers(1, 3))
    def emit(self, n: int) -> None:
        """The stream creates ``n`` tweets."""
        self.newest += n
        self.log(f"stream creates up to {self.newest}")

    @invariant()
    def rows_stay(self) -> None:
        """Fact: a committed row is never lost (the sink only grows)."""
        rows = self.db.execute("SELECT count(*) FROM tweets").fetchone()[0]
        self.check(rows >= self.rows, "the sink lost rows")
        self.rows = rows

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.root, ignore_errors=True)


# checkpoint ---------------------------------------------------------------------------


class Died(Exception):
    """The process died here (raised into ``dump_state`` by :class:`DiesMidWrite`)."""


class DiesMidWrite:
    """A state file for :func:`checkpoint.dump_state` whose process dies once ``budget``
    characters have reached the disk: a power cut or a full disk during ``json.dump``, the
    way part of a dump lands (a killed process loses its whole buffer: an empty file)."""

    def __init__(self, f: TextIO, budget: int) -> None:
        self.f, self.budget = f, budget

    def write(self, text: str) -> int:
        part = text[: self.budget]
        self.f.write(part)
        self.f.flush()
        self.budget -= len(part)
        if len(part) < len(text):
            raise Died(f"after {part!r}")
        return len(text)

    def __enter__(self) -> DiesMidWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


@dataclass
class CheckpointTry:
    """A running try of ``checkpoint``: its connection, batch, and next protocol step."""

    sink: Sink
    cursor: int  # the last id its connection delivered
    last_processed_id: int | None
    pending: list[tuple[int, float]] = field(default_factory=list)
    step: str = "read"  # "read" (until the batch is full), "commit", "open", "dump"
    state_file: TextIO | None = None


class CheckpointMachine(ProtocolMachine):
    """``checkpoint``'s protocol: a try loads the state file (``load_state``) and connects
    with ``since_id`` = its id; it reads tweets until the batch is full, commits it
    (``commit_batch``), opens the state file (``open_state``: truncated) and dumps the id
    into it (``dump_state``). A dropped connection commits the partial batch without
    writing the file and reconnects from the id in memory.

    Facts (checked as they happen): a try resumes from the last complete write on its
    worker, or from the live stream if that worker has none; once ``load_state`` raised on
    a worker, it raises in every later try there (nothing runs to rewrite the file)."""

    def __init__(self) -> None:
        super().__init__()
        self.try_: CheckpointTry | None = None
        self.failed_tries = 0  # in a row, on this worker: load_state raised
        self.saved: int | None = None  # the last complete dump on this worker
        self.first_saved: int | None = None  # the first complete dump, on any worker

    @property
    def state_path(self) -> Path:
        return self.disk / checkpoint.STATE_FILE

    def saved_now(self, last_processed_id: int) -> None:
        self.saved = last_processed_id
        if self.first_saved is None:
            self.first_saved = last_processed_id

    def start_try(self) -> None:
        """A try starts on the current worker: ``load_state``, then it connects."""
        sink = self.open_sink()
        try:
            since, said = printed(lambda: checkpoint.load_state(self.state_path))
        except json.JSONDecodeError as error:
            sink.close()
            self.failed_tries += 1
            content = self.state_path.read_bytes()
            self.log(f"try {self.tries}: load_state raised JSONDecodeError ({error}) on {content}")
            self.reached(f"load_state raised on {'a partial dump' if content else 'an empty file'}")
            return
        self.check(self.failed_tries == 0, "a torn state file healed")
        self.check(since == self.saved, f"resumed from {since}, saved {self.saved}")
        self.reached("resumed from a save" if since is not None else "started live")
        cursor = self.connect(since)
        self.try_ = CheckpointTry(sink, cursor, since)
        self.log(f"try {self.tries}: load_state -> {since} ({said!r}); reads after {cursor}")

    def step(self) -> None:
        """The step ``run``'s loop takes next."""
        t = self.try_
        assert t is not None
        if t.step == "read":
            t.cursor = self.read(t.cursor)
            t.pending.append((t.cursor, 0.0))
            if len(t.pending) >= self.batch:
                t.step = "commit"
        elif t.step == "commit":
            ids = [i for i, _ in t.pending]
            t.last_processed_id = checkpoint.commit_batch(t.sink, t.pending)
            t.pending, t.step = [], "open"
            self.log(f"commit_batch {ids}")
        elif t.step == "open":
            t.state_file, t.step = checkpoint.open_state(self.state_path), "dump"
            self.log("open_state (the file is now empty)")
        else:
            assert t.state_file is not None
            assert t.last_processed_id is not None
            checkpoint.dump_state(t.state_file, t.last_processed_id)
            t.state_file, t.step = None, "read"
            self.saved_now(t.last_processed_id)
            self.log(f"dump_state {t.last_processed_id}")

    @rule(until=st.sampled_from(["read", "commit", "open", "dump"]))
    def run(self, until: str) -> None:
        """A try starts if none is running (if ``load_state`` raises, that is all); the
        loop runs until it is about to take step ``until`` again (one batch at most)."""
        if self.try_ is None:
            self.start_try()
        if self.try_ is not None:
            self.step()
            while self.try_.step != until:
                self.step()

    @precondition(lambda self: self.try_ is not None and self.try_.step == "read")
    @rule()
    def connection_ends(self) -> None:
        """The stream drops: ``run`` commits the partial batch (no state write) and
        reconnects with ``since_id`` = the last id it processed (None: the live stream)."""
        t = self.try_
        assert t is not None
        if t.pending:
            ids = [i for i, _ in t.pending]
            t.last_processed_id = checkpoint.commit_batch(t.sink, t.pending)
            t.pending = []
            self.log(f"connection ends: commit_batch {ids}")
            self.reached("connection ends with a partial batch")
        t.cursor = self.connect(t.last_processed_id)
        self.log(f"reconnect since_id={t.last_processed_id}: reads after {t.cursor}")

    @precondition(lambda self: self.try_ is not None)
    @rule()
    def crash(self) -> None:
        """SIGKILL before the loop's next step. After ``open_state`` nothing was written
        to the file object yet: the file stays empty."""
        t = self.try_
        assert t is not None
        if t.state_file is not None:
            t.state_file.close()  # flushes nothing: nothing was written
        t.sink.close()
        self.try_ = None
        self.log(f"crash (before {t.step}, holding {[i for i, _ in t.pending]})")
        self.reached(f"crash before {t.step}")

    @precondition(lambda self: self.try_ is not None and self.try_.step == "dump")
    @rule(written=st.integers(1, 30))
    def crash_mid_dump(self, written: int) -> None:
        """The process dies inside ``dump_state`` once ``written`` characters reached the
        disk (a whole dump is 24 to 26: more is a crash right after a complete write)."""
        t = self.try_
        assert t is not None
        assert t.state_file is not None
        assert t.last_processed_id is not None
        try:
            checkpoint.dump_state(DiesMidWrite(t.state_file, written), t.last_processed_id)
            self.saved_now(t.last_processed_id)
            self.log(f"dump_state {t.last_processed_id}, complete")
        except Died as died:
            self.log(f"dump_state {t.last_processed_id} dies {died}")
            self.reached("crash mid-dump")
        t.state_file, t.step = None, "read"
        self.crash()

    @precondition(lambda self: self.try_ is None)
    @rule()
    def move_worker(self) -> None:
        """The next try runs on another worker: an empty local disk."""
        if self.saved is not None or self.failed_tries:
            self.reached("moved away from a state file")
        self.disk = self.new_disk()
        self.failed_tries, self.saved = 0, None
        self.log(f"move to worker {self.disks} (no state file)")


class CheckpointCommitsOnce(CheckpointMachine):
    """A property ``checkpoint`` lacks: no tweet is committed twice."""

    @invariant()
    def nothing_committed_twice(self) -> None:
        self.check(not self.twice(), f"committed twice: {self.twice()}")


#: Airflow's tries of the checkpoint task: the first and its retries.
CHECKPOINT_TRIES = 1 + VARIANTS["checkpoint"].task["retries"]


class CheckpointRecovers(CheckpointMachine):
    """A property ``checkpoint`` lacks: not all of a task's tries fail."""

    @invariant()
    def not_every_try_fails(self) -> None:
        tries = self.failed_tries
        self.check(tries < CHECKPOINT_TRIES, f"crash loop: {tries} tries in a row raised")


class CheckpointLosesNothingOnceSaved(CheckpointMachine):
    """A property ``checkpoint`` lacks: once it has saved a state file, no tweet after
    the saved id is lost (skipped while a later one is committed)."""

    @invariant()
    def nothing_lost_after_first_save(self) -> None:
        if self.first_saved is not None:
            lost = self.lost_after(self.first_saved)
            self.check(not lost, f"lost: {lost}")


# exactly_once -------------------------------------------------------------------------


@dataclass
class ExactlyOnceTry:
    """A running try of ``exactly_once``: its connection, batch, and checkpoint."""

    name: str  # "try N", or "orphan N" once Airflow has moved on without it
    sink: Sink
    cursor: int
    since: int  # where the connection started
    checkpoint: int
    pending: list[tuple[int, float]] = field(default_factory=list)


class Interleaved:
    """The sink as one commit of ``t`` sees it, while another writer commits too: before
    this commit's ``at``-th call into the sink, ``other`` runs whole (after the commit, if
    it makes fewer calls). A read and a write that are two calls can be split this way;
    one transaction cannot (a second writer waits for it)."""

    def __init__(self, sink: Sink, at: int, other: Callable[[], None]) -> None:
        self._sink, self._at, self._other = sink, at, other
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._sink, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._at:
                self._other()
            return method(*args, **kwargs)

        return call


class ExactlyOnceMachine(ProtocolMachine):
    """``exactly_once``'s protocol: a try reads the checkpoint from the sink
    (``resume_point``; the first try of all records its start point there) and connects
    from it (the first try of all: live); it reads tweets and commits them with the
    checkpoint in one transaction (``commit_batch``) when the batch is full or old enough;
    a dropped connection or the end of the try commits what it holds, then reconnects
    (or returns).

    An *orphan* is a try Airflow gave up on (its worker lost, a zombie) whose process
    streams on beside the retry, as two connections on a token allow (X Enterprise's
    redundant connections). It takes steps of its own, and its commit can race the
    retry's: ``orphan_commit_races(at)`` lands the retry's whole commit before the
    orphan's commit's ``at``-th call into the sink.

    Its claim is checked after every rule (:meth:`exactly_once_claim`)."""

    def __init__(self) -> None:
        super().__init__()
        self.try_: ExactlyOnceTry | None = None
        self.orphan_: ExactlyOnceTry | None = None
        self.reader = Sink(self.sink_path, pid=os.getpid(), try_number=0)
        self.ever: set[int] = set()  # every id seen committed so far
        self.start_point: int | None = None

    def commit(self, why: str, t: ExactlyOnceTry | None = None, sink: Any = None) -> None:
        t = t or self.try_
        assert t is not None
        ids = [i for i, _ in t.pending]
        if set(ids) & self.ever or len(set(ids)) < len(ids):
            self.reached("a batch with repeats")
        t.checkpoint = exactly_once.commit_batch(sink or t.sink, t.pending, t.checkpoint)
        t.pending = []
        done = f"checkpoint {t.checkpoint}" if ids else "nothing to write"
        self.log(f"{t.name}: {why}: commit_batch {ids} -> {done}")

    def start_try(self) -> None:
        """A try starts on the current worker: ``resume_point``, then it connects."""
        sink = self.open_sink()
        start = self.newest  # the position a live connection would read from
        since = exactly_once.resume_point(sink, start)
        first = since == start and self.start_point is None
        if first:
            self.start_point = start
        cursor = self.connect(None if first else since)
        self.try_ = ExactlyOnceTry(f"try {self.tries}", sink, cursor, cursor, since)
        how = "start point, live" if first else "resumes"
        self.log(f"try {self.tries}: resume_point -> {since} ({how}); reads after {cursor}")
        if not first:
            self.reached(f"resumed on worker {'1' if self.disks == 1 else '2+'}")

    def next_step(self, t: ExactlyOnceTry) -> str:
        return "commit" if len(t.pending) >= self.batch else "read"

    def advance(self, t: ExactlyOnceTry, until: str) -> None:
        """``t``'s loop runs until it is about to take step ``until`` again."""
        while True:
            if self.next_step(t) == "commit":
                self.commit("batch full", t)
            else:
                t.cursor = self.read(t.cursor)
                t.pending.append((t.cursor, 0.0))
            if self.next_step(t) == until:
                return

    @rule(until=st.sampled_from(["read", "commit"]))
    def run(self, until: str) -> None:
        """A try starts if none is running; the loop runs until it is about to take step
        ``until`` again: ``read`` a tweet, or ``commit`` a full batch."""
        if self.try_ is None:
            self.start_try()
        assert self.try_ is not None
        self.advance(self.try_, until)

    @precondition(lambda self: self.try_ is not None and self.try_.pending)
    @rule()
    def commit_by_age(self) -> None:
        """``MAX_BATCH_AGE`` passed: the loop commits a partial batch."""
        self.commit("batch old")

    @precondition(lambda self: self.try_ is not None)
    @rule()
    def connection_ends(self) -> None:
        """The stream drops (or errs): the loop commits what it holds and reconnects from
        its checkpoint."""
        t = self.try_
        assert t is not None
        self.commit("connection ends")
        t.cursor = t.since = self.connect(t.checkpoint)
        self.log(f"{t.name}: reconnect from {t.checkpoint}: reads after {t.cursor}")
        self.reached("reconnected")

    @precondition(lambda self: self.try_ is not None and self.try_.cursor > self.try_.since)
    @rule(k=st.integers(1, 3))
    def stream_repeats(self, k: int) -> None:
        """The connection delivers its last ``k`` tweets again (a replay on the wire)."""
        t = self.try_
        assert t is not None
        t.cursor = max(t.since, t.cursor - k)
        self.log(f"stream repeats from {t.cursor + 1}")

    @precondition(lambda self: self.try_ is not None)
    @rule()
    def try_ends(self) -> None:
        """``try_seconds`` is up, or ``on_kill``: the loop commits what it holds and
        returns."""
        t = self.try_
        assert t is not None
        self.commit("try ends")
        t.sink.close()
        self.try_ = None
        self.reached("try ended")

    @precondition(lambda self: self.try_ is not None)
    @rule()
    def crash(self) -> None:
        """SIGKILL between two steps: the batch in memory is gone."""
        t = self.try_
        assert t is not None
        t.sink.close()
        self.try_ = None
        step = self.next_step(t)
        self.log(f"crash (before {step}, holding {[i for i, _ in t.pending]})")
        self.reached(f"crash before {step}")

    @precondition(lambda self: self.try_ is None)
    @rule()
    def move_worker(self) -> None:
        """The next try runs on another worker (``exactly_once`` keeps nothing there)."""
        self.disk = self.new_disk()
        self.log(f"move to worker {self.disks}")

    # The orphan ---------------------------------------------------------------------

    @precondition(lambda self: self.try_ is not None and self.orphan_ is None)
    @rule()
    def orphaned(self) -> None:
        """Airflow gives up on the running try (its worker lost: a zombie) and starts a
        retry; the try's process streams on."""
        t = self.try_
        assert t is not None
        t.name = t.name.replace("try", "orphan")
        self.orphan_, self.try_ = t, None
        self.log(f"{t.name}: orphaned, still streaming, holding {[i for i, _ in t.pending]}")
        self.start_try()  # Airflow's retry

    @precondition(lambda self: self.orphan_ is not None)
    @rule(until=st.sampled_from(["read", "commit"]))
    def orphan_runs(self, until: str) -> None:
        """The orphan's loop runs on, as :meth:`run`'s does."""
        assert self.orphan_ is not None
        self.advance(self.orphan_, until)

    @precondition(lambda self: self.orphan_ is not None and self.try_ is not None)
    @rule(at=st.integers(1, 3))
    def orphan_commit_races(self, at: int) -> None:
        """The orphan and the retry commit at the same time (each first reads a batch if
        it holds none): the retry's commit lands whole before the orphan's commit's
        ``at``-th call into the sink."""
        orphan, retry = self.orphan_, self.try_
        assert orphan is not None
        assert retry is not None
        for t in (orphan, retry):
            if not t.pending:
                self.advance(t, "commit")
        ran: list[bool] = []
        self.reached("commits raced")
        if {i for i, _ in orphan.pending} & {i for i, _ in retry.pending}:
            self.reached("racing commits of the same tweets")

        def retry_commits() -> None:
            self.commit("races", retry)
            ran.append(True)

        racing = Interleaved(orphan.sink, at, retry_commits)
        self.commit("races", orphan, racing)
        if ran and racing.calls > at:
            self.reached("a commit split by another")
        elif not ran:
            retry_commits()

    @precondition(lambda self: self.orphan_ is not None)
    @rule(clean=st.booleans())
    def orphan_ends(self, clean: bool) -> None:
        """The orphan's process finally ends: it returns (committing what it holds), or
        is killed (losing it)."""
        t = self.orphan_
        assert t is not None
        if clean:
            self.commit("orphan ends", t)
        t.sink.close()
        self.orphan_ = None
        self.log(f"{t.name}: {'returns' if clean else 'killed'}")
        self.reached("an orphan ended")

    @invariant()
    def exactly_once_claim(self) -> None:
        """Nothing committed twice; nothing committed lost; the sink's checkpoint is its
        newest row, or the start point before any (rows and checkpoint commit together);
        every id from the first committed one up to it is committed (no gap to resume
        past)."""
        ids = self.committed()
        self.check(not self.twice(), f"committed twice: {self.twice()}")
        self.check(self.ever <= set(ids), "committed rows lost")
        self.ever = set(ids)
        saved = self.reader.checkpoint(exactly_once.CHECKPOINT)
        newest = max(ids, default=self.start_point)
        self.check(saved == newest, f"checkpoint {saved}, newest committed {newest}")
        if ids:
            gaps = set(range(min(ids), max(ids) + 1)) - set(ids)
            self.check(not gaps, f"gap {sorted(gaps)} below the checkpoint")

    def teardown(self) -> None:
        for t in (self.try_, self.orphan_):
            if t is not None:
                t.sink.close()
        self.reader.close()
        super().teardown()


class ExactlyOnceLosesNothingSinceFirstConnect(ExactlyOnceMachine):
    """Nothing created after its first try connected is lost (the checker's window starts
    at the first connection), even when that try dies before its first commit."""

    @invariant()
    def nothing_lost_since_first_connect(self) -> None:
        if self.floor is not None:
            lost = self.lost_after(self.floor)
            self.check(not lost, f"lost: {lost}")


# The tests ----------------------------------------------------------------------------


def find(machine: type[RuleBasedStateMachine], match: str) -> list[str]:
    """Run ``machine`` until hypothesis breaks its property (the failure's message matches
    ``match``). Prints the shrunk schedule (the rule calls in the failure's notes) and the
    trace (in its message); returns the trace's lines."""
    with pytest.raises(AssertionError, match=match) as failure:
        run_state_machine_as_test(machine, settings=SEARCH)
    rules = [
        line.removeprefix("state.")
        for line in getattr(failure.value, "__notes__", [])
        if line.startswith("state.")
        and hasattr(getattr(machine, line[6:].split("(")[0], None), "hypothesis_stateful_rule")
    ]
    message, trace = str(failure.value).split("\ntrace:\n  ")
    print("\n".join([message, "schedule:", *rules, "trace:", trace]))
    return trace.split("\n  ")


def reached(machine: type[RuleBasedStateMachine]) -> set[str]:
    """What the schedules of ``machine`` reached (:data:`REACHED`), with counts printed."""
    prefix = f"{machine.__name__}: "
    seen = {key.removeprefix(prefix): n for key, n in REACHED.items() if key.startswith(prefix)}
    print(seen)
    return set(seen)


def test_checkpoint_facts_under_every_schedule():
    """What ``checkpoint`` does under any schedule: the sink never loses a row; a try
    resumes from the last complete state-file write on its worker, or reads the live stream
    when that worker has none; a torn state file stays torn (every later ``load_state`` on
    that worker raises) until the task moves to another worker. The schedules reached a
    crash before each of the four steps, a crash mid-dump, ``load_state`` raising on an
    empty and on a partial file, and a move away from a state file."""
    REACHED.clear()
    run_state_machine_as_test(CheckpointMachine, settings=FACTS)
    assert reached(CheckpointMachine) >= {
        "crash before read",
        "crash before commit",
        "crash before open",
        "crash before dump",
        "crash mid-dump",
        "load_state raised on an empty file",
        "load_state raised on a partial dump",
        "resumed from a save",
        "started live",
        "connection ends with a partial batch",
        "moved away from a state file",
    }


def test_checkpoint_found_to_commit_twice():
    """Hypothesis finds a crash schedule that commits tweets twice: a crash after a
    batch's commit and before its state file is written, with an earlier save to resume
    from.

    Shrunk (hypothesis 6.170, these settings; the trace in comments)::

        tweets_per_batch(batch=1)
        run(until='read')   # try 1: read 1, commit_batch [1], open_state, dump_state 1
        run(until='open')   # read 2, commit_batch [2]
        crash()             # before open_state: the file still says 1
        run(until='read')   # try 2: load_state -> 1, read 2, commit_batch [2]: twice
    """
    trace = find(CheckpointCommitsOnce, "committed twice")
    crash = max(i for i, line in enumerate(trace) if line.startswith("crash"))
    last_commit = max(i for i, line in enumerate(trace[:crash]) if "commit_batch" in line)
    assert any(line.startswith("dump_state") for line in trace[:last_commit])  # a save...
    assert not any("dump_state" in line for line in trace[last_commit:crash])  # ...not this
    assert "load_state -> " in trace[crash + 1]  # the retry resumed from the older save


def test_checkpoint_found_torn_state_file_crash_loop():
    """Hypothesis finds a schedule in which every one of the task's Airflow tries raises:
    a crash inside the non-atomic write leaves a truncated state file, and ``json.load``
    raises on it in each later try, outside the loop's ``except Exception``.

    Shrunk (hypothesis 6.170, these settings; the trace in comments)::

        tweets_per_batch(batch=1)
        run(until='dump')   # try 1: read 1, commit_batch [1], open_state: file empty
        crash()             # before dump_state
        run(until='read')   # try 2: load_state raised JSONDecodeError on b''
        run(until='read')   # try 3: the same
        run(until='read')   # try 4: the same (1 try + 2 retries: the task fails)
    """
    trace = find(CheckpointRecovers, "crash loop")
    crash = max(i for i, line in enumerate(trace) if line.startswith("crash"))
    assert "crash (before dump" in trace[crash] or "dies" in trace[crash - 1]
    raised = [line for line in trace[crash + 1 :] if "load_state raised JSONDecodeError" in line]
    assert len(raised) == CHECKPOINT_TRIES


def test_checkpoint_found_to_lose_after_move_worker():
    """Hypothesis finds a schedule that loses tweets after a state file was saved: the
    retry runs on another worker, finds no file and reads the live stream, skipping what
    was created while no try ran.

    Shrunk (hypothesis 6.170, these settings; the trace in comments)::

        tweets_per_batch(batch=1)
        run(until='read')   # try 1: read 1, commit_batch [1], open_state, dump_state 1
        crash()
        move_worker()       # the retry's disk has no state file
        emit(n=1)           # the stream creates 2 while no try runs
        run(until='read')   # try 2: load_state -> None, live: reads 3, commits it; 2 lost
    """
    trace = find(CheckpointLosesNothingOnceSaved, "lost")
    moved = next(i for i, line in enumerate(trace) if line.startswith("move to worker"))
    assert any(line.startswith("dump_state") for line in trace[:moved])
    assert "load_state -> None" in next(line for line in trace[moved:] if "load_state" in line)


def test_exactly_once_under_every_schedule():
    """``exactly_once``'s claim under any schedule of crashes (before any step), clean
    ends of tries, dropped connections, replays on the wire, worker moves, and orphans
    streaming beside their retries with commits racing: no tweet committed twice, no
    committed tweet lost, the checkpoint always the newest committed id, no gap below it.
    The schedules reached a crash before each step, batches with repeats, reconnections,
    tries ending, resumes on the first and on another worker, and a commit split by the
    other try's."""
    REACHED.clear()
    run_state_machine_as_test(ExactlyOnceMachine, settings=FACTS)
    assert reached(ExactlyOnceMachine) >= {
        "crash before read",
        "crash before commit",
        "a batch with repeats",
        "reconnected",
        "try ended",
        "resumed on worker 1",
        "resumed on worker 2+",
        "an orphan ended",
        "racing commits of the same tweets",
    }


def test_exactly_once_loses_nothing_before_its_first_commit():
    """A first try records its start point before it reads, so a try that dies (or whose
    connection drops) before committing anything leaves its retry a place to resume from:
    nothing created after the first connect is lost. (Before the start point, hypothesis
    shrank a loss to: batch=2; try 1 reads 1 live; crash; try 2 reads 2 live, commits it;
    1 is lost.)"""
    run_state_machine_as_test(ExactlyOnceLosesNothingSinceFirstConnect, settings=FACTS)
