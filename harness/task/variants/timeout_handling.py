"""timeout_handling: the article's example 3, flaws kept.

- The task has an ``execution_timeout`` (set by the DAG factory), and installs its own
  SIGTERM handler raising a custom ``TimeoutError`` that the loop catches, then returns.
- But Airflow enforces ``execution_timeout`` with SIGALRM raising ``AirflowTaskTimeout``
  (a ``BaseException``): the handler never sees it. And replacing Airflow's SIGTERM handler
  means a SIGTERM (task cleared, worker shutdown) makes the task *return successfully*.
- No checkpoint: every try starts from the live stream.
"""

from __future__ import annotations

import signal
from types import FrameType

from harness.task.variants.common import TaskContext, cpu_work, read_stream


class TimeoutError(Exception):  # the article's own name, shadowing the builtin
    pass


def run(ctx: TaskContext) -> None:
    probe = ctx.probe
    probe.started(logical_date=ctx.logical_date, resumed_from=None)

    def handler(signum: int, frame: FrameType | None) -> None:
        probe.signal(signum)
        raise TimeoutError("Time is up!")

    signal.signal(signal.SIGTERM, handler)
    cpu_us, batch = float(ctx.param("cpu_us")), int(ctx.param("batch"))
    sink = probe.open_sink()
    counter = 0
    try:
        while ctx.keep_running():
            pending = []
            for message in read_stream(ctx):
                tweet = message["data"]
                pending.append((int(tweet["id"]), cpu_work(tweet["text"], cpu_us)))
                counter += 1
                if len(pending) >= batch:
                    sink.commit(pending)
                    pending = []
            if pending:
                sink.commit(pending)
    except TimeoutError:
        print("Timeout Signal received")
    except Exception as e:
        print(f"Error: {e}")
    print(f"Read {counter} tweets")
