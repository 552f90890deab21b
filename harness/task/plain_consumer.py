"""A plain stream consumer outside Airflow, committing through the probe.

The control subject of the experiments (and the end-to-end test of the checker): the
simplest correct consumer, or the simplest forgetful one.

``--resume checkpoint``
    commits each batch together with the id of its last tweet in one sink transaction,
    and after a restart reconnects with ``since_id`` = that checkpoint: exactly once.
``--resume none``
    reconnects to the live stream after a restart: whatever was created meanwhile is lost.

It reads until the server ends the stream, then exits 0 (the probe records ``returned``).

``python -m harness.task.plain_consumer --stream-url URL --token-file F --run-dir DIR --try N``
(the token in a file, as the ingester takes it: never on a command line, where ``ps``
shows it and a token starting with ``-`` reads as an option).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import requests

from harness.task.probe import Probe

CHECKPOINT = "last_committed_id"


def consume(
    stream_url: str, token: str, run_dir: Path, try_number: int, batch: int, resume: str
) -> int:
    probe = Probe(
        run_dir, dag_id="plain_consumer", run_id="plain", task_id="consume", try_number=try_number
    )
    sink = probe.open_sink()
    since = sink.checkpoint(CHECKPOINT) if resume == "checkpoint" else None
    probe.started(resumed_from=since)
    params = {"since_id": str(since)} if since is not None else None
    pending: list[tuple[int, float | None]] = []
    try:
        with requests.get(
            stream_url,
            headers={"Authorization": f"Bearer {token}"},
            params=params,
            stream=True,
            timeout=60,
        ) as response:
            response.raise_for_status()
            for line in response.iter_lines(chunk_size=4096):
                if not line:
                    continue
                message = json.loads(line)
                if "data" not in message:
                    probe.mark("stream_message", message=message)
                    continue
                pending.append((int(message["data"]["id"]), float(len(message["data"]["text"]))))
                if len(pending) >= batch:
                    sink.commit(pending, (CHECKPOINT, pending[-1][0]))
                    pending = []
        if pending:
            sink.commit(pending, (CHECKPOINT, pending[-1][0]))
    except BaseException as error:
        probe.exited("raised", error)
        raise
    finally:
        sink.close()
    probe.exited("returned")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m harness.task.plain_consumer"
    )
    parser.add_argument("--stream-url", required=True)
    parser.add_argument("--token-file", type=Path, required=True, help="holds the bearer token")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--try", dest="try_number", type=int, default=1)
    parser.add_argument("--batch", type=int, default=50, help="tweets per sink commit")
    parser.add_argument("--resume", choices=["checkpoint", "none"], default="checkpoint")
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip()
    return consume(args.stream_url, token, args.run_dir, args.try_number, args.batch, args.resume)


if __name__ == "__main__":
    sys.exit(main())
