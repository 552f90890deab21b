"""The command lines as a CI job and a shell pipeline use them: no abbreviated options,
``list`` into ``head``, ``list`` from another folder, exit statuses of ``check``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from harness.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for top in ("harness", "fake_stream") for p in (ROOT / top).rglob("*.py"))


def _parsers(path: Path) -> list[ast.Call]:
    """Every ``ArgumentParser(...)`` and ``add_parser(...)`` call in a source file."""
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]
    named = [(c, c.func.attr if isinstance(c.func, ast.Attribute) else "") for c in calls]
    return [c for c, name in named if name in ("ArgumentParser", "add_parser")]


def test_no_parser_accepts_an_abbreviated_option():
    """``--rat 5`` once started a server at rate 5: every parser, and every subcommand's
    (argparse does not pass the setting down), says ``allow_abbrev=False``."""
    found = {p: _parsers(p) for p in SOURCES}
    assert sum(len(calls) for calls in found.values()) >= 10  # the walker sees them
    lax = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path, calls in found.items()
        for call in calls
        if not any(
            k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in call.keywords
        )
    ]
    assert lax == []


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["fake_stream", "serve", "--rat", "5"], "--rat"),
        (["harness", "run", "x.toml", "--dry"], "--dry"),
    ],
    ids=["fake_stream serve --rat", "harness run --dry"],
)
def test_an_abbreviated_option_is_bad_input(argv, option):
    done = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2
    assert f"unrecognized arguments: {option}" in done.stderr


def test_list_into_head_ends_quietly():
    """The reader closes the pipe after one line: no ``BrokenPipeError`` traceback."""
    shell = f"{sys.executable} -m harness list | head -n 1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert done.stderr == ""
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1


def test_list_from_another_folder_finds_the_projects_scenarios(tmp_path):
    here = subprocess.run(
        [sys.executable, "-m", "harness", "list"], capture_output=True, text=True, timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    elsewhere = subprocess.run(
        [sys.executable, "-m", "harness", "list"], capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )  # fmt: skip
    assert elsewhere.returncode == here.returncode == 0
    assert elsewhere.stdout == here.stdout
    assert len(here.stdout.splitlines()) > 10


def test_list_with_no_scenario_anywhere_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.__main__.SCENARIO_FOLDERS", (Path("scenarios"), tmp_path / "none"))
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"no scenario files given, and no *.toml in {tmp_path / 'scenarios'} and "
        f"{tmp_path / 'none'}\n"
    )
