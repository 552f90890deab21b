"""What measuring the GIL costs the ``threaded`` variant's throughput. Target <= 3%.

The variant's pipeline at its default settings (2 worker threads, ``cpu_us`` 50, batches of
50 committed through the probe's sink), fed as fast as it takes tweets: a reader thread
puts 20,000 real wire lines (the fake stream's renderer) into the variant's bounded queue
and :func:`harness.task.variants.multiprocess.work` does the rest. One GIL for all three
threads, so this is the case the knocker disturbs most.

- ``bare``: no sampler, and the reader does not note the tweets' lag;
- ``sampled``: the sampler as the probe starts it (gilknocker knocking, a sample a second)
  and the reader noting each tweet's lag, as ``_read`` does.

Each round runs both, alternating which goes first, so drifts of a shared machine hit both
alike; the overhead is the difference of the two medians (and of the two best runs) over
the bare one, in wall time (throughput) and in the process's CPU time (steadier when other
jobs share the cores).
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from fake_stream import snowflake
from fake_stream.tweets import TweetFactory
from harness.task.gil import READER, GilSampler
from harness.task.variants.multiprocess import _DONE, _QUEUE_SIZE, _tweet_id, work

TWEETS = 20_000
ROUNDS = 11
WORKERS = 2


def _lines() -> list[bytes]:
    ms = int(time.time() * 1000) - TWEETS
    unix_ms = np.arange(ms, ms + TWEETS, dtype=np.int64)
    ids = snowflake.encode_array(unix_ms, np.zeros(TWEETS, dtype=np.int64)).astype(np.int64)
    suffix = TweetFactory.rule_suffix("1", "bench")
    factory = TweetFactory(seed=7)
    return [
        line.rstrip(b"\r\n") for line in factory.lines(np.arange(TWEETS), ids, unix_ms, [suffix])
    ]


def _pipeline(run_dir: Path, lines: list[bytes], sampled: bool) -> tuple[float, float]:
    """Seconds to process every line: wall time, and CPU time of the process."""
    fields = {
        "run_dir": str(run_dir),
        "ids": {"dag_id": "bench", "run_id": "r", "task_id": "t", "try_number": 1},
        "cpu_us": 50.0,
        "batch": 50,
        "gil_interval": 0.0,
    }
    sampler = GilSampler(lambda _: None, 1.0) if sampled else None
    q: queue.Queue[bytes] = queue.Queue(_QUEUE_SIZE)
    workers = [
        threading.Thread(target=work, args=(q, fields, i, None), daemon=True)
        for i in range(WORKERS)
    ]
    start, cpu = time.perf_counter(), time.process_time()
    if sampler is not None:
        sampler.start()
    for w in workers:
        w.start()
    for line in lines:
        if sampled:
            tweet_id = _tweet_id(line)
            if tweet_id is not None:
                READER.saw(tweet_id)
        q.put(line)
    for _ in workers:
        q.put(_DONE)
    for w in workers:
        w.join()
    elapsed = (time.perf_counter() - start, time.process_time() - cpu)
    if sampler is not None:
        sampler.stop()
    return elapsed


def test_gil_sampling_overhead(benchmark, tmp_path_factory, capsys) -> None:
    lines = _lines()
    times: dict[str, list[float]] = {"bare": [], "sampled": []}
    cpu: dict[str, list[float]] = {"bare": [], "sampled": []}
    rounds = iter(range(ROUNDS))

    def one_round() -> None:
        n = next(rounds)
        order = ["bare", "sampled"] if n % 2 == 0 else ["sampled", "bare"]
        for side in order:
            run_dir = tmp_path_factory.mktemp(f"{side}-{n}")
            wall, cpu_s = _pipeline(run_dir, lines, side == "sampled")
            times[side].append(wall)
            cpu[side].append(cpu_s)

    benchmark.pedantic(one_round, rounds=ROUNDS)
    bare, sampled = statistics.median(times["bare"]), statistics.median(times["sampled"])
    overhead = (sampled - bare) / bare * 100
    best = (min(times["sampled"]) - min(times["bare"])) / min(times["bare"]) * 100
    cpu_bare, cpu_sampled = statistics.median(cpu["bare"]), statistics.median(cpu["sampled"])
    cpu_overhead = (cpu_sampled - cpu_bare) / cpu_bare * 100
    benchmark.extra_info.update(
        {
            "bare_tweets_per_s": TWEETS / bare,
            "sampled_tweets_per_s": TWEETS / sampled,
            "overhead_percent": overhead,
            "overhead_percent_of_best": best,
            "cpu_overhead_percent": cpu_overhead,
        }
    )
    with capsys.disabled():
        print(
            f"\nthreaded pipeline: bare {TWEETS / bare:,.0f} tweets/s, sampled "
            f"{TWEETS / sampled:,.0f} tweets/s: overhead {overhead:+.1f}% (best runs: "
            f"{best:+.1f}%; medians of "
            f"{ROUNDS}; bare {sorted(round(t, 3) for t in times['bare'])}, sampled "
            f"{sorted(round(t, 3) for t in times['sampled'])} s); CPU time per tweet "
            f"{cpu_bare / TWEETS * 1e6:.1f} vs {cpu_sampled / TWEETS * 1e6:.1f} us: "
            f"{cpu_overhead:+.1f}%"
        )
