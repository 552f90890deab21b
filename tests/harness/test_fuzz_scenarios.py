"""Fuzz: hypothesis-generated scenario files (valid and broken structures, wrong types,
nan and inf, unknown keys, deep nesting, matrices including themselves, bytes that are
not UTF-8 or not TOML) through ``python -m harness run --dry-run``: exit 0, or 2 with a
message naming the file and the field; never a traceback (issue 14)."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.__main__ import main
from harness.nemesis import registered
from tests.fuzz import examples

pytestmark = pytest.mark.fuzz

FIELDS = [
    "name", "description", "seed", "variant", "mode", "duration", "rate", "params", "task",
    "server", "stream_faults", "airflow_faults", "hypothesis", "faults",
]  # fmt: skip
NUMBERS = st.one_of(
    st.integers(-3, 3),
    st.integers(),
    st.floats(),  # nan and inf included
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, 0.0, 2**63]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.text(max_size=6), st.sampled_from(["inf", "nan"]))
ANY = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


class _Deep(int):
    """An array nested this deep (written as text: no recursion in the test either)."""


# fmt: off
PLAUSIBLE = {
    "airflow_faults": st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from([*registered(), "explode"])},
            optional={
                "at": NUMBERS, "after_commits": NUMBERS, "duration": NUMBERS, "times": NUMBERS,
                "limit_mb": NUMBERS, "from": st.sampled_from(["first_commit", "later"]),
            },
        ),
        max_size=2,
    ),
    "task": st.dictionaries(
        st.sampled_from(["retries", "retry_delay", "execution_timeout", "other"]), SCALARS
    ),
    "params": st.dictionaries(
        st.sampled_from(["cpu_us", "batch", "workers", "gil_interval", "run_seconds", "x"]),
        SCALARS,
    ),
    "rate": st.one_of(
        NUMBERS,
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["constant", "poisson", "piecewise", "nope"])},
            optional={"rate": NUMBERS, "points": ANY, "file": st.sampled_from(["p.csv", ""])},
        ),
    ),
    "hypothesis": st.lists(
        st.builds(
            "{} {} {}".format,
            st.sampled_from(["lost", "lsot", "verdict", "queue.lost", "queue.x", "p99_latency_s"]),
            st.sampled_from(["==", "<", "is"]),
            st.sampled_from(["0", "nan", "inf", "exactly-once", "true", "-1e400"]),
        )
        | SCALARS,
        max_size=2,
    ),
    "stream_faults": st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["latency", "reset_peer", "http_503", "nope"])},
            optional={"attributes": st.dictionaries(st.sampled_from(["latency", "x"]), NUMBERS)},
        ),
        max_size=2,
    ),
    "server": st.dictionaries(
        st.sampled_from(["queue_size", "max_batch", "keepalive", "host", "bogus"]), SCALARS
    ),
    "mode": st.sampled_from(["dagtest", "standalone", "localtask", "nope"]),
    "variant": st.sampled_from(["naive_loop", "exactly_once", "nope"]),
    "matrix": st.fixed_dictionaries(
        {},
        optional={
            "variants": st.lists(st.sampled_from(["naive_loop", "checkpoint", "x"]), max_size=2),
            "files": st.lists(st.sampled_from(["x.toml", "missing.toml"]), max_size=1),
            "rates": st.lists(NUMBERS, max_size=3),
            "params": st.lists(st.dictionaries(st.sampled_from(["cpu_us", "x"]), NUMBERS)),
            "quick": st.sampled_from(["^naive", "(", "[a-"]),
        },
    ) | SCALARS,
}
# fmt: on
VALUES = {name: st.one_of(PLAUSIBLE.get(name, ANY), ANY) for name in [*FIELDS, "matrix"]}


@st.composite
def scenario_bytes(draw: st.DrawFn) -> bytes:
    document: dict[str, Any] = {"name": "x", "variant": "naive_loop"}
    for name in draw(st.lists(st.sampled_from([*FIELDS, "matrix"]), max_size=4, unique=True)):
        document[name] = draw(VALUES[name])
    if draw(st.booleans()):
        document[draw(st.text(min_size=1, max_size=6))] = draw(ANY)
    if draw(st.integers(0, 9)) == 0:
        document["params"] = {"cpu_us": _Deep(draw(st.integers(10, 3000)))}
    text = "".join(f"{_key(k)} = {_toml(v)}\n" for k, v in document.items()).encode()
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "byte"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "byte":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + text[at:]
    return text


def _key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def _toml(value: Any) -> str:
    """A value as TOML (inline tables and arrays)."""
    if isinstance(value, _Deep):
        return "[" * value + "1" + "]" * value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _dry_run(path: Path) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = main(["run", str(path), "--dry-run", "--out", str(path.parent / "out")])
    return code, err.getvalue()


def _named(folder: Path, err: str) -> bool:
    """The message starts with a file of the scenario's folder, then a field (or what in
    the file is wrong: its TOML, its bytes) and a problem."""
    return bool(re.match(rf"^{re.escape(str(folder))}/[^:]+\.toml: .+?: \S", err, re.S)) or bool(
        re.match(rf"^{re.escape(str(folder))}/[^:]+\.toml: not valid TOML \(", err)
    )


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario_bytes())
def test_a_generated_scenario_is_run_or_refused_naming_file_and_field(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.toml"
        path.write_bytes(text)
        code, err = _dry_run(path)
    event(f"exit {code}")
    assert code in (0, 2), err
    if code == 2:
        assert _named(Path(folder), err), err
        assert "Traceback" not in err


@settings(max_examples=max(3, examples(3) // 50), deadline=None)  # ~3-5 s a process
@given(scenario_bytes())
def test_the_real_command_refuses_without_a_traceback(text):
    """The same through ``python -m harness`` in its own process: the exit code and stderr
    a user sees."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.toml"
        path.write_bytes(text)
        result = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(path), "--dry-run"],
            capture_output=True, text=True, timeout=120, cwd=folder,
        )  # fmt: skip
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        assert _named(Path(folder), result.stderr), result.stderr
