"""``python -m harness <command>``: the harness's command line.

Exit statuses of ``run`` and ``check`` (README "Gating CI on a run"): 0 every scenario ran
and every hypothesis held; 1 a hypothesis failed (``--exit-zero``: 0); 2 bad input (a
scenario file, the command line, a folder that is not a run); 3 a scenario could not be
run or checked; 128 + N interrupted by signal N.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.procs import install_signal_handlers

OK, HYPOTHESIS_FAILED, BAD_INPUT, NOT_RUN = 0, 1, 2, 3
#: Where ``list`` looks when given no file: here, then the project this package is in.
SCENARIO_FOLDERS = (Path("scenarios"), Path(__file__).resolve().parents[1] / "scenarios")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        allow_abbrev=False,
        help="stream from a fake X server and check it against its ledger",
    )
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--rate", type=float, default=1000.0, help="tweets per second")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, help="run folder (default results/demo-<time>)")
    check = sub.add_parser(
        "check",
        allow_abbrev=False,
        help="recompute metrics.json of a run folder from its raw files",
    )
    check.add_argument("run_dir", type=Path)
    check.add_argument("--exit-zero", action="store_true", help=_EXIT_ZERO)
    run = sub.add_parser(
        "run", allow_abbrev=False, help="run scenario or matrix files against a real Airflow"
    )
    run.add_argument("files", type=Path, nargs="*")
    own = run.add_argument_group("your own DAG (instead of files; docs/your-own-dag.md)")
    own.add_argument("--dag", type=Path, help="its DAG file")
    own.add_argument("--dag-id", default="", help="its DAG (default: the file's only one)")
    own.add_argument("--task", help="the task under test (with --dag)")
    own.add_argument(
        "--faults", default="none,kill_task", help="comma-separated: none, timeout, or an "
        "Airflow fault type at 5 s (default: none,kill_task)",
    )  # fmt: skip
    own.add_argument("--duration", type=float, default=15.0, help="seconds of stream")
    own.add_argument("--rate", type=float, default=200.0, help="tweets per second")
    own.add_argument("--connection", default="x_stream", help="the conn id its task reads")
    run.add_argument("--out", type=Path, help="results folder (default results/<time>)")
    run.add_argument("--only", help="run only scenarios whose name matches this regex")
    run.add_argument("--quick", action="store_true", help="the matrix's quick subset")
    run.add_argument(
        "--jobs", type=_jobs, metavar="N",
        help="scenarios at once on a shared Airflow (default: what this machine's CPUs hold; "
        "a scenario whose fault acts on the whole Airflow runs alone)",
    )  # fmt: skip
    run.add_argument(
        "--resume",
        action="store_true",
        help="keep the scenarios --out already holds finished (same definition), redo the rest",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="validate and list what would run; start nothing"
    )
    run.add_argument("--exit-zero", action="store_true", help=_EXIT_ZERO)
    listing = sub.add_parser(
        "list", allow_abbrev=False, help="list the scenarios of scenario or matrix files"
    )
    listing.add_argument("files", type=Path, nargs="*")
    report = sub.add_parser(
        "report", allow_abbrev=False, help="rebuild charts, report.md and index.html of a run"
    )
    report.add_argument("run_dir", type=Path)
    compare = sub.add_parser(
        "compare", allow_abbrev=False, help="what changed between two results folders"
    )
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    compare.add_argument("--out", type=Path, help="also write the comparison to this file")
    gil = sub.add_parser(
        "gil-calibrate", allow_abbrev=False, help="check the GIL metric on known workloads"
    )
    gil.add_argument("--seconds", type=float, default=3.0, help="per workload")
    args = parser.parse_args(argv)
    install_signal_handlers()
    if args.command == "demo":
        from harness.run.demo import run_demo

        out = args.out or Path("results") / f"demo-{time.strftime('%Y%m%dT%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        return run_demo(out, args.seconds, args.rate, args.seed)
    if args.command == "check":
        code = _check(args.run_dir)
        return OK if code == HYPOTHESIS_FAILED and args.exit_zero else code
    if args.command == "gil-calibrate":
        from harness.task.gil_calibrate import calibrate_command

        return calibrate_command(args.seconds)
    if args.command in ("report", "compare"):
        from harness.report.cli import compare_command, report_command

        if args.command == "report":
            return report_command(args.run_dir)
        return compare_command(args.a, args.b, args.out)
    return _scenarios(args)


_EXIT_ZERO = "exit 0 when a hypothesis failed (exploratory runs); errors still exit 2 or 3"


def _jobs(text: str) -> int:
    """``--jobs``: a whole number from 1 to 16."""
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if not 1 <= jobs <= 16:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 1 to 16")
    return jobs


def _scenario_files() -> list[Path]:
    """The scenario files of the first of :data:`SCENARIO_FOLDERS` that has any."""
    for folder in SCENARIO_FOLDERS:
        if files := sorted(folder.glob("*.toml")):
            return files
    return []


def _scenarios(args: argparse.Namespace) -> int:
    from harness.scenario import ScenarioError, dag_scenarios, load_many, quick_pattern

    if args.command == "run" and (args.dag is None) == (not args.files):
        print("run: give scenario files, or --dag FILE --task ID (not both)", file=sys.stderr)
        return BAD_INPUT
    if args.command == "run" and args.dag is not None:
        if not args.task:
            print("--dag: give the task under test with --task", file=sys.stderr)
            return BAD_INPUT
        try:
            faults = [f.strip() for f in args.faults.split(",") if f.strip()]
            scenarios = dag_scenarios(
                args.dag, args.task, args.dag_id, faults, duration=args.duration,
                rate=args.rate, connection=args.connection,
            )  # fmt: skip
        except ScenarioError as e:
            print(e, file=sys.stderr)
            return BAD_INPUT
        return _run(args, scenarios)
    files = list(getattr(args, "files", None) or _scenario_files())
    if not files:
        looked = " and ".join(str(f.resolve()) for f in SCENARIO_FOLDERS)
        print(f"no scenario files given, and no *.toml in {looked}", file=sys.stderr)
        return BAD_INPUT
    try:
        only = args.only if args.command == "run" else None
        if args.command == "run" and args.quick:
            only = quick_pattern(files)
            if only is None:
                raise ScenarioError("--quick: no file given has a matrix.quick pattern")
        scenarios = load_many(files, only)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return BAD_INPUT
    if args.command == "list":
        try:
            for s in scenarios:
                print(f"{s.name:40} {s.subject:18} {s.description}")
            sys.stdout.flush()
        except BrokenPipeError:  # `list | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    return _run(args, scenarios)


def _run(args: argparse.Namespace, scenarios: list[Any]) -> int:
    from harness.run.jobs import alone, default_jobs
    from harness.run.matrix import earlier_run, run_matrix
    from harness.run.runner import check_dags
    from harness.scenario import ScenarioError

    try:
        check_dags(scenarios)  # a DAG file that does not parse: before anything starts
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return BAD_INPUT

    if args.resume and args.out is None:
        print("--resume: give the results folder to finish with --out", file=sys.stderr)
        return BAD_INPUT
    out = args.out or Path("results") / time.strftime("%Y%m%dT%H%M%S")
    if out.exists() and not out.is_dir():
        print(f"--out: {out} exists and is not a folder", file=sys.stderr)
        return BAD_INPUT
    if args.dry_run:
        jobs = args.jobs or default_jobs(scenarios)
        for s in scenarios:
            kept, why = earlier_run(s, out) if args.resume else (None, "")
            solo = alone(s) if jobs > 1 else None
            why = "; ".join(w for w in (why, solo and f"alone: {solo}") if w)
            print(f"{s.name:40} {'keep' if kept else 'run':4} {why}".rstrip())
        at_once = f", up to {jobs} at once" if jobs > 1 else ""
        print(f"{len(scenarios)} scenarios valid{at_once}; nothing started (--dry-run)")
        return OK
    outcome = run_matrix(scenarios, out, resume=args.resume, jobs=args.jobs)
    if outcome.errored:
        return NOT_RUN
    return HYPOTHESIS_FAILED if outcome.failed and not args.exit_zero else OK


def _check(run_dir: Path) -> int:
    from harness.check import headline
    from harness.check.metrics import check_run
    from harness.check.records import RunError, require_finished

    if not run_dir.is_dir():
        print(f"error: {run_dir}: no such folder", file=sys.stderr)
        return BAD_INPUT
    try:
        require_finished(run_dir)  # an interrupted run is never judged
        metrics = check_run(run_dir)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT
    except OSError as e:  # metrics.json or history.jsonl could not be written
        print(f"error: {e.filename}: cannot write ({e.strerror})", file=sys.stderr)
        return BAD_INPUT
    queue = metrics["queue"]
    if "error" in queue or "created" not in queue:
        print(f"error: {run_dir}: the queue checker failed: {queue.get('error')}", file=sys.stderr)
        return NOT_RUN
    if queue.get("unobserved"):  # nothing observed: no counts to print
        print(f"{run_dir}: {metrics['verdict']}: {queue['unobserved']}")
    else:
        print(
            f"{run_dir}: {metrics['verdict']}; created {queue['created']:,}, processed "
            f"{queue['processed_unique']:,} unique / {queue['processed_total']:,} total, "
            f"lost {queue['lost']:,}, duplicates {queue['duplicates']:,}, "
            f"unexpected {queue['unexpected']:,}; silent failure: {metrics['silent_failure']}"
        )
    if causes := headline.lost_by_cause(metrics):
        print(f"lost by cause: {headline.causes_text(causes)}")
    print(f"metrics: {run_dir / 'metrics.json'}")
    hypothesis = metrics.get("hypothesis") or {}
    if hypothesis.get("held") is False:
        failed = [r["hypothesis"] for r in hypothesis.get("results", []) if not r["held"]]
        print(f"hypothesis failed: {'; '.join(failed)}")
        return HYPOTHESIS_FAILED
    return OK


if __name__ == "__main__":
    sys.exit(main())
