"""What a local attacker could do to a running fake stream, and what it now refuses.

- Nothing that arrives over HTTP names a server-side path: a rate profile's ``file`` is
  refused however the body quotes it, with the same answer whether the file exists or not.
- Tokens come from a file (``--token-file``), not the command line every local user can
  read in ``ps``.
- Binding anything but loopback takes ``--allow-remote``, and then a warning.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness.procs import OwnedProcess
from harness.run.services import StreamServerProcess
from tests.fake_stream._clients import assert_problem

SERVE = [sys.executable, "-m", "fake_stream", "serve"]


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A readable file whose content must never come back in an answer."""
    path = tmp_path_factory.mktemp("secret") / "passwd.csv"
    path.write_text("0,100\nroot:x:0:0:the-secret-row\n")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    ledger = tmp_path_factory.mktemp("security") / "ledger.sqlite"
    with StreamServerProcess(ledger, ["--rate", "50", "--rules-limit", "0"]) as server:
        yield server


def _bodies(path: str) -> list[object]:
    spec = {"kind": "piecewise", "file": path}
    return [spec, json.dumps(spec), json.dumps(json.dumps(spec)), {**spec, "arrivals": "poisson"}]


@pytest.mark.parametrize("form", range(4), ids=["object", "string", "string-of-string", "poisson"])
def test_put_rate_never_reads_a_file(server, secret_file, form):
    """Every quoting of a ``file`` profile is a 400 that neither echoes the file nor tells
    whether it exists (the JSON-string form once did both), and the rate stays."""
    before = server.control("GET", "rate")["profile"]
    details = []
    for path in (str(secret_file), str(secret_file.with_name("missing.csv"))):
        body = _bodies(path)[form]
        url = f"{server.url}/_control/rate"
        response = requests.put(url, json=body, headers=server.headers, timeout=10)
        details.append(assert_problem(response, 400)["detail"])
        assert "the-secret-row" not in response.text
    assert details[0] == details[1], "the answer tells whether the file exists"
    assert "file" in details[0]
    assert server.control("GET", "rate")["profile"] == before


def test_no_other_endpoint_takes_a_path(server, secret_file):
    """Faults and rules have no field that is a path: a ``file`` anywhere is refused or is
    a rule's plain text, never opened."""
    fault = {"type": "latency", "attributes": {"file": str(secret_file)}}
    response = requests.post(
        f"{server.url}/_control/faults", json=fault, headers=server.headers, timeout=10
    )
    assert "attributes.file" in assert_problem(response, 400)["detail"]
    schedule = {"type": "latency", "schedule": {"file": str(secret_file)}}
    response = requests.post(
        f"{server.url}/_control/faults", json=schedule, headers=server.headers, timeout=10
    )
    assert "schedule.file" in assert_problem(response, 400)["detail"]
    rule = {"add": [{"value": f"@{secret_file}", "tag": "t"}]}
    response = requests.post(
        f"{server.url}/2/tweets/search/stream/rules", json=rule, headers=server.headers, timeout=10
    )
    assert response.status_code == 200
    assert "the-secret-row" not in response.text


# ---------------------------------------------------------------------------------------
# tokens


def test_token_file_tokens_are_accepted_and_stay_off_the_command_line(tmp_path):
    """One token per line, blank lines ignored; each works, nothing else does; the tokens
    appear nowhere in the process's command line."""
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token\n\n  second-token  \n")
    tokens.chmod(0o600)
    proc = OwnedProcess(
        [*SERVE, "--ledger", str(tmp_path / "l.sqlite"), "--token-file", str(tokens)]
    )
    try:
        info = json.loads(proc.popen.stdout.readline())
        for token, status in (("first-token", 200), ("second-token", 200), ("other", 401)):
            response = requests.get(
                f"{info['url']}/_control/stats",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            assert response.status_code == status
        cmdline = Path(f"/proc/{proc.popen.pid}/cmdline").read_bytes()
        assert b"first-token" not in cmdline
        assert b"second-token" not in cmdline
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("", "holds no token"), ("\n  \n", "holds no token"),
     ("has space\n", "no spaces"), (b"\xff\xfe\n", "cannot read"), ("/", "cannot read")],
    ids=["missing", "empty", "blank", "space", "not-utf8", "a-folder"],
)  # fmt: skip
def test_bad_token_file_exits_2_saying_why(tmp_path, content, message):
    tokens = tmp_path / "tokens"
    if content == "/":
        tokens.mkdir()  # unreadable as a file, also for root (mode 0 is not, for root)
    elif isinstance(content, bytes):
        tokens.write_bytes(content)
    elif content is not None:
        tokens.write_text(content)
    result = subprocess.run(
        [*SERVE, "--ledger", str(tmp_path / "l.sqlite"), "--token-file", str(tokens)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--token-file" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "l.sqlite").exists()


# ---------------------------------------------------------------------------------------
# binding


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_non_loopback_host_needs_allow_remote(tmp_path, host):
    result = subprocess.run(
        [*SERVE, "--ledger", str(tmp_path / "l.sqlite"), "--host", host],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--host" in result.stderr
    assert "not a loopback address" in result.stderr
    assert "--allow-remote" in result.stderr
    assert not (tmp_path / "l.sqlite").exists()


def test_allow_remote_warns_then_binds(tmp_path):
    """With --allow-remote the server warns on stderr before binding. 192.0.2.1 (TEST-NET-1)
    is no address of this machine, so the bind then fails: exit 2 naming the cause, no
    traceback and no ledger; nothing is ever exposed beyond loopback by this test."""
    result = subprocess.run(
        [*SERVE, "--ledger", str(tmp_path / "l.sqlite"), "--host", "192.0.2.1", "--allow-remote"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "warning: binding 192.0.2.1 (--allow-remote)" in result.stderr
    assert result.returncode == 2
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "l.sqlite").exists()


def test_loopback_names_need_no_opt_in(tmp_path):
    proc = OwnedProcess([*SERVE, "--ledger", str(tmp_path / "l.sqlite"), "--host", "localhost"])
    try:
        info = json.loads(proc.popen.stdout.readline())
        assert info["url"].startswith("http://localhost:")
        headers = {"Authorization": f"Bearer {info['bearer_token']}"}
        stats = requests.get(f"{info['url']}/_control/stats", headers=headers, timeout=5)
        assert stats.status_code == 200
    finally:
        proc.stop()
