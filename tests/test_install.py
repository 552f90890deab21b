"""The core installs from ``pyproject.toml`` alone (no lock, no extras) and its commands
start: every module they import is declared. ``long`` (it downloads the dependencies):
``nox -s package`` runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _venv(folder: Path) -> Path:
    """A new venv with the project installed (not editable) from pyproject.toml."""
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(folder)], check=True)
        python = folder / "bin" / "python"
        install = [uv, "pip", "install", "-q", "-p", str(python), str(ROOT)]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        python = folder / "bin" / "python"
        install = [str(python), "-m", "pip", "install", "-q", str(ROOT)]
    subprocess.run(install, check=True, timeout=900, capture_output=True)
    return python


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_the_core_installs_from_pyproject_alone_and_its_commands_start(tmp_path):
    python = _venv(tmp_path / "venv")
    away = tmp_path / "elsewhere"  # not the source tree: the installed package is used
    away.mkdir()
    default = str(ROOT / "scenarios" / "default.toml")
    commands = {
        "harness --help": ["-m", "harness", "--help"],
        "harness list": ["-m", "harness", "list", default],
        "harness run --dry-run": ["-m", "harness", "run", default, "--dry-run", "--out", "o"],
        "harness check --help": ["-m", "harness", "check", "--help"],
        "fake_stream serve --help": ["-m", "fake_stream", "serve", "--help"],
    }
    for name, argv in commands.items():
        done = subprocess.run(
            [str(python), *argv], capture_output=True, text=True, timeout=300, cwd=away
        )
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
        assert done.stdout, name
    for module in ("harness", "streamstall_probe"):  # the probe: what a user's DAG imports
        where = subprocess.run(
            [str(python), "-c", f"import {module}; print({module}.__file__)"],
            capture_output=True, text=True, check=True, cwd=away,
        )  # fmt: skip
        assert "site-packages" in where.stdout, module
        assert not where.stdout.startswith(str(ROOT)), module
