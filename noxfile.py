"""nox sessions: the front door of streamstall. ``nox --list`` shows them."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"
LOCK = "requirements/lock-py311.txt"


def install(session: nox.Session) -> None:
    """The locked dependencies, then this project without touching them."""
    session.install("-r", LOCK)
    session.install("--no-deps", "-e", ".")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (real servers on loopback; no benchmarks, no `long` repros)."""
    install(session)
    session.run("pytest", "-m", "not long", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def run(session: nox.Session) -> None:
    """The main job: the default scenario matrix on Airflow -> results/<time>/ (-- --quick)."""
    install(session)
    session.run("python", "-m", "harness", "run", "scenarios/default.toml", *session.posargs)


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
    session.run("python", "-m", "harness", "run", *session.posargs)


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
    """Re-resolve requirements/lock-py311.txt from pyproject.toml (needs the uv backend)."""
    session.install("uv")
    session.run(
        "uv",
        "pip",
        "compile",
        "pyproject.toml",
        "--extra",
        "airflow",
        "--extra",
        "dev",
        "--python-version",
        PYTHON,
        "-o",
        LOCK,
        *session.posargs,
    )
