"""The harness's last word: a process of ours that outlives it on purpose.

:mod:`harness.procs` starts one per harness process, with its first child, and tells it
over a pipe about every session it starts (``+ pid start``) and stops (``- pid``). When
the pipe closes without ``bye`` (the harness was SIGKILLed, hung up on, or died past its
handlers) the watchdog stops every session still registered: SIGTERM to each member, a
grace period, then SIGKILL. A pid is signalled only if its start time says it is the
process registered (or one started later in that session), never a reused pid.

Run as ``python -m harness.watchdog`` by :mod:`harness.procs`; not for people.
"""

from __future__ import annotations

import signal
import sys

from harness.procs import stop_sessions

__all__ = ["main"]


def main() -> int:
    # Its own session already (start_new_session): no terminal's SIGINT/SIGHUP reaches it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sessions: dict[int, float] = {}
    for line in sys.stdin:
        op, *args = line.split()
        if op == "+":
            sessions[int(args[0])] = float(args[1])
        elif op == "-":
            sessions.pop(int(args[0]), None)
        elif op == "bye":
            return 0
    stopped = stop_sessions(sessions)
    if stopped:
        print(f"streamstall watchdog: the harness is gone; stopped {stopped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
