"""``python -m harness <command>``: the harness's command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.procs import install_signal_handlers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="stream from a fake X server and check it against its ledger"
    )
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--rate", type=float, default=1000.0, help="tweets per second")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, help="run folder (default results/demo-<time>)")
    check = sub.add_parser(
        "check", help="recompute metrics.json of a run folder from its raw files"
    )
    check.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    install_signal_handlers()
    if args.command == "demo":
        from harness.demo import run_demo

        out = args.out or Path("results") / f"demo-{time.strftime('%Y%m%dT%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        return run_demo(out, args.seconds, args.rate, args.seed)
    if args.command == "check":
        return _check(args.run_dir)
    return 2


def _check(run_dir: Path) -> int:
    from harness.history import RunError
    from harness.metrics import check_run

    try:
        metrics = check_run(run_dir)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    queue = metrics["queue"]
    print(
        f"{run_dir}: {metrics['verdict']}; created {queue['created']:,}, "
        f"processed {queue['processed_unique']:,} unique / {queue['processed_total']:,} total, "
        f"lost {queue['lost']:,}, duplicates {queue['duplicates']:,}, "
        f"unexpected {queue['unexpected']:,}; silent failure: {metrics['silent_failure']}"
    )
    print(f"metrics: {run_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
