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
    run = sub.add_parser("run", help="run scenario or matrix files against a real Airflow")
    run.add_argument("files", type=Path, nargs="+")
    run.add_argument("--out", type=Path, help="results folder (default results/<time>)")
    run.add_argument("--only", help="run only scenarios whose name matches this regex")
    run.add_argument("--quick", action="store_true", help="the matrix's quick subset")
    run.add_argument(
        "--resume",
        action="store_true",
        help="keep the scenarios --out already holds finished (same definition), redo the rest",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="validate and list what would run; start nothing"
    )
    listing = sub.add_parser("list", help="list the scenarios of scenario or matrix files")
    listing.add_argument("files", type=Path, nargs="*")
    report = sub.add_parser("report", help="rebuild charts, report.md and index.html of a run")
    report.add_argument("run_dir", type=Path)
    compare = sub.add_parser("compare", help="what changed between two results folders")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    compare.add_argument("--out", type=Path, help="also write the comparison to this file")
    gil = sub.add_parser("gil-calibrate", help="check the GIL metric on known workloads")
    gil.add_argument("--seconds", type=float, default=3.0, help="per workload")
    args = parser.parse_args(argv)
    install_signal_handlers()
    if args.command == "demo":
        from harness.run.demo import run_demo

        out = args.out or Path("results") / f"demo-{time.strftime('%Y%m%dT%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        return run_demo(out, args.seconds, args.rate, args.seed)
    if args.command == "check":
        return _check(args.run_dir)
    if args.command == "gil-calibrate":
        from harness.task.gil_calibrate import calibrate_command

        return calibrate_command(args.seconds)
    if args.command in ("report", "compare"):
        from harness.report.cli import compare_command, report_command

        if args.command == "report":
            return report_command(args.run_dir)
        return compare_command(args.a, args.b, args.out)
    return _scenarios(args)


def _scenarios(args: argparse.Namespace) -> int:
    from harness.scenario import ScenarioError, load_many, quick_pattern

    files = list(getattr(args, "files", None) or sorted(Path("scenarios").glob("*.toml")))
    try:
        only = args.only if args.command == "run" else None
        if args.command == "run" and args.quick:
            only = quick_pattern(files)
            if only is None:
                raise ScenarioError("--quick: no file given has a matrix.quick pattern")
        scenarios = load_many(files, only)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    if args.command == "list":
        for s in scenarios:
            print(f"{s.name:40} {s.variant:18} {s.description}")
        return 0
    from harness.run.matrix import earlier_run, run_matrix

    if args.resume and args.out is None:
        print("--resume: give the results folder to finish with --out", file=sys.stderr)
        return 2
    out = args.out or Path("results") / time.strftime("%Y%m%dT%H%M%S")
    if out.exists() and not out.is_dir():
        print(f"--out: {out} exists and is not a folder", file=sys.stderr)
        return 2
    if args.dry_run:
        for s in scenarios:
            kept, why = earlier_run(s, out) if args.resume else (None, "")
            print(f"{s.name:40} {'keep' if kept else 'run':4} {why}".rstrip())
        print(f"{len(scenarios)} scenarios valid; nothing started (--dry-run)")
        return 0
    return run_matrix(scenarios, out, resume=args.resume)


def _check(run_dir: Path) -> int:
    from harness.check.metrics import check_run
    from harness.check.records import RunError, require_finished

    try:
        require_finished(run_dir)  # an interrupted run is never judged
        metrics = check_run(run_dir)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # metrics.json or history.jsonl could not be written
        print(f"error: {e.filename}: cannot write ({e.strerror})", file=sys.stderr)
        return 2
    queue = metrics["queue"]
    if "error" in queue or "created" not in queue:
        print(f"error: {run_dir}: the queue checker failed: {queue.get('error')}", file=sys.stderr)
        return 1
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
