"""nox sessions: the front door of streamstall. ``nox --list`` shows them."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"
LOCK = "requirements/lock-py311.txt"  # Airflow 3.3.2 (the `airflow` extra) and the rest
# Airflow 2.x for `repro`: the project's deps and dev extra, Airflow from this input instead
AIRFLOW2_INPUT = "requirements/airflow2.in"
AIRFLOW2_LOCK = "requirements/lock-airflow2-py311.txt"
#: Airflow release -> the lock that installs it (the `repro` session runs each).
AIRFLOW_LOCKS = {"3.3.2": LOCK, "2.11.2": AIRFLOW2_LOCK}
#: The last patch of each minor line `nox -s versions` measures -> its lock. 2.10-3.2 come
#: from requirements/airflow-<release>.in, compiled with pyproject.toml by `nox -s lock`.
VERSIONS = ["2.10.5", "2.11.2", "3.0.6", "3.1.8", "3.2.2", "3.3.2"]
#: Where the `versions` marker is: `dags test` runs, and the production faults on a worker.
VERSION_TESTS = ["tests/repro/test_versions.py", "tests/repro/test_production_faults.py"]
VERSION_LOCKS = {
    release: AIRFLOW_LOCKS.get(release, f"requirements/lock-airflow-{release}-py311.txt")
    for release in VERSIONS
}


def install(session: nox.Session, lock: str = LOCK) -> None:
    """The locked dependencies, then this project without touching them."""
    session.install("-r", lock)
    session.install("--no-deps", "-e", ".")


def install_airflow(session: nox.Session, release: str, lock: str) -> None:
    """:func:`install` of ``lock``, then check it installed Airflow ``release``."""
    install(session, lock)
    installed = session.run(
        "python",
        "-c",
        "import importlib.metadata as m; print(m.version('apache-airflow'))",
        silent=True,
    )
    if installed is not None and installed.strip() != release:  # None: --install-only
        session.error(f"{lock} installed Airflow {installed!r}, not {release}")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (real servers on loopback; no benchmarks, no `long` repros)."""
    install(session)
    # The slowest tests are listed at the end: CI's time budget is 20 minutes.
    session.run("pytest", "-m", "not long", "--durations=15", *session.posargs)


@nox.session(python=PYTHON, default=False)
@nox.parametrize("airflow", list(AIRFLOW_LOCKS), ids=list(AIRFLOW_LOCKS))
def repro(session: nox.Session, airflow: str) -> None:
    """The article's claims (pytest -m repro, `long` included) on one Airflow: 3.3.2, 2.11.2."""
    install_airflow(session, airflow, AIRFLOW_LOCKS[airflow])
    postgres(session)  # tests/repro/test_distributed_faults.py (the celery mode)
    # Arguments after -- go to pytest (a later `-m` replaces `repro`).
    session.run("pytest", "-m", "repro", *session.posargs)


@nox.session(python=PYTHON, default=False)
@nox.parametrize("airflow", VERSIONS, ids=VERSIONS)
def versions(session: nox.Session, airflow: str) -> None:
    """In which release did each behaviour change? The version-sensitive claims (pytest -m
    versions: under `dags test` and on the release's worker mode) on one Airflow, in its
    own venv; its cells go to results/versions/<release>.json, and the table
    (results/versions/table.md, and its copy in tests/README.md) is rebuilt from every
    release measured. `nox -s versions`: all."""
    install_airflow(session, airflow, VERSION_LOCKS[airflow])
    cells = Path("results/versions") / f"{airflow}.json"
    # This run's cells replace the release's old ones only if every test passed: a red
    # run leaves the table as it was, consistent with its cells.
    fresh = cells.with_suffix(".json.new")
    fresh.unlink(missing_ok=True)
    env = {"STREAMSTALL_VERSION_CELLS": str(fresh.resolve())}
    # Only the files with the marked tests: the rest of the suite imports what some
    # releases lack (the postgres provider of the celery mode).
    session.run("pytest", "-m", "versions", *VERSION_TESTS, *session.posargs, env=env)
    if fresh.exists():
        fresh.replace(cells)
    session.run("python", "-m", "tests.versions_table")


@nox.session(python=PYTHON, default=False)
def package(session: nox.Session) -> None:
    """The core from pyproject.toml alone (no lock) in a fresh venv: its commands start."""
    install(session)
    session.run("pytest", "-m", "long", "tests/test_install.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def load(session: nox.Session) -> None:
    """Same scenario, same result: the same tweets and fault times twice; the clock-sensitive
    scenarios on a quiet, then a busy machine, with the same verdicts."""
    install(session)
    tests = ["tests/harness/run/test_determinism.py", "tests/harness/run/test_load.py"]
    session.run("pytest", "-m", "long", "-s", *tests, *session.posargs)


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """The fuzz tests (hostile HTTP, scenario files, run folders), each many examples."""
    install(session)
    examples = os.environ.get("STREAMSTALL_FUZZ_EXAMPLES", "2000")
    session.run(
        "pytest", "-m", "fuzz", "--timeout", "3600", *session.posargs,
        env={"STREAMSTALL_FUZZ_EXAMPLES": examples},
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def crash(session: nox.Session) -> None:
    """The harness killed mid-matrix, a scenario that errors: nothing survives, --resume ends it."""
    install(session)
    tests = ["tests/harness/run/test_crash.py", "tests/harness/run/test_resume.py"]
    session.run("pytest", "-m", "long", *tests, *session.posargs)


@nox.session(python=PYTHON, default=False)
def examples(session: nox.Session) -> None:
    """Your own DAG, by example: both examples/ DAGs under every fault, counted against
    their own tables, a sink query and a DAG that never reports (docs/your-own-dag.md)."""
    install(session)
    session.run("pytest", "-m", "long", "tests/harness/test_your_own_dag.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def soak(session: nox.Session) -> None:
    """The fake stream through faults for -- --minutes N: RSS, CPU, ledger == consumer."""
    install(session)
    session.run("python", "-m", "harness.run.soak", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def run(session: nox.Session) -> None:
    """The main job: the default scenario matrix on Airflow -> results/<time>/ (-- --quick;
    -- --jobs N: N scenarios at once, default what the CPUs hold).

    Its hypothesis (nothing lost, nothing repeated) fails for the article's variants by
    design: the matrix is a comparison, so a failed hypothesis does not fail the session
    (`--exit-zero`); `nox -s scenarios` gates on it."""
    install(session)
    argv = ["python", "-m", "harness", "run", "scenarios/default.toml", "--exit-zero"]
    session.run(*argv, *session.posargs)


def latest_results(root: Path = Path("results")) -> Path | None:
    """The results folder (one holding <scenario>/scenario.json) written to last."""
    folders = {p.parent.parent for p in root.glob("*/*/scenario.json")}
    return max(folders, key=lambda f: max(p.stat().st_mtime for p in f.iterdir()), default=None)


@nox.session(python=PYTHON, default=False)
def charts(session: nox.Session) -> None:
    """Rebuild charts, report.md and index.html of the latest results/ folder (or -- DIR)."""
    install(session)
    target = Path(session.posargs[0]) if session.posargs else latest_results()
    if target is None:
        session.error("no results folder under results/: run `nox -s run` first, or name one")
    session.run("python", "-m", "harness", "report", str(target))


@nox.session(python=PYTHON, default=False)
def scenarios(session: nox.Session) -> None:
    """Run the scenario or matrix files named in posargs."""
    install(session)
    if any("celery" in Path(a).read_text() for a in session.posargs if Path(a).is_file()):
        postgres(session)
    session.run("python", "-m", "harness", "run", *session.posargs)


def postgres(session: nox.Session) -> None:
    """Debian's PostgreSQL server (the celery mode's database), installed when missing."""
    if glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    session.run(*sudo, "apt-get", "update", "-qq", external=True)
    session.run(
        *sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
        "postgresql", external=True,
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Stream from a fake X server for a few seconds and check it against its ledger."""
    install(session)
    session.run("python", "-m", "harness", "demo", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (pytest-benchmark); JSON saved under results/bench/, compared with the last."""
    install(session)
    session.run(
        "pytest",
        "benchmarks",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "--benchmark-storage=file://results/bench",
        "--benchmark-autosave",
        "--benchmark-compare",
        "-s",
        *session.posargs,
    )


@nox.session(python=PYTHON, default=False)
def lock(session: nox.Session) -> None:
    """Re-resolve requirements/lock-py311.txt (Airflow 3.3.2), lock-airflow2-py311.txt
    (2.11.2) and lock-airflow-<release>-py311.txt (the other releases of `versions`).

    All from pyproject.toml (its deps and dev extra); Airflow 3.3.2 is the `airflow` extra,
    2.11.2 comes from requirements/airflow2.in, the others from airflow-<release>.in.
    Needs the uv backend."""
    session.install("uv")
    common = ["--extra", "dev", "--python-version", PYTHON, *session.posargs]
    session.run("uv", "pip", "compile", "pyproject.toml", "--extra", "airflow", *common, "-o", LOCK)
    session.run(
        "uv", "pip", "compile", "pyproject.toml", AIRFLOW2_INPUT, *common, "-o", AIRFLOW2_LOCK
    )
    for release, lock in VERSION_LOCKS.items():
        if lock not in (LOCK, AIRFLOW2_LOCK):
            source = f"requirements/airflow-{release}.in"
            session.run("uv", "pip", "compile", "pyproject.toml", source, *common, "-o", lock)
