"""``python -m fake_stream record`` against a real fake server: the capture holds exactly
what the server's ledger says that connection received, each way of stopping leaves the
end record it should (or, killed, none, and lenient reads lose nothing), and bad options
exit 2 before anything is written."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from fake_stream.__main__ import main
from fake_stream.capture import CaptureError, read_capture
from harness.procs import OwnedProcess, free_port

RECORD = [sys.executable, "-m", "fake_stream", "record"]
TOKEN_ENV = "STREAMSTALL_RECORD_TEST_TOKEN"
RULES = ['{"value": "cats", "tag": "felines"}', '{"value": "dogs", "tag": "canines"}']


def env_with(token: str | None) -> dict[str, str]:
    """The recorder's environment: the token only there, never on its command line."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    return env


def start_recorder(url: str, out: Path, *args: str, token: str | None) -> OwnedProcess:
    argv = [*RECORD, "--url", url, "--token-env", TOKEN_ENV, "--out", str(out), *args]
    return OwnedProcess(argv, env=env_with(token), stderr=-1)  # -1: subprocess.PIPE


def run_recorder(
    url: str, out: Path, *args: str, token: str | None, timeout: float = 20
) -> tuple[int, str, str]:
    """Run a recording to its end: (exit code, stdout, stderr)."""
    proc = start_recorder(url, out, *args, token=token)
    try:
        stdout, stderr = proc.popen.communicate(timeout=timeout)
        return proc.popen.returncode, stdout, stderr
    finally:
        proc.stop()


def records(path: Path) -> list[dict]:
    """Every line of a capture that must be whole, parsed (fails on a partial one)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the last record was cut short"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def wait_for_lines(path: Path, proc: OwnedProcess, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") > count:
            return
        assert proc.alive(), "the recorder ended before it recorded anything"
        time.sleep(0.02)
    pytest.fail(f"{path} did not reach {count} lines in {timeout} s")


def signal_mid_recording(server, out: Path, sig: signal.Signals) -> tuple[int, str, str]:
    """Record ``server``'s stream into ``out``; once 20 lines are written, send ``sig``:
    how the recorder ended (exit code, stdout, stderr)."""
    proc = start_recorder(server.stream_url, out, token=server.token)
    try:
        wait_for_lines(out, proc, 20)
        proc.signal(sig)
        stdout, stderr = proc.popen.communicate(timeout=10)
        return proc.popen.returncode, stdout, stderr
    finally:
        proc.stop()


def delivered_ids(server, conn_id: int) -> list[int]:
    """The ids the ledger says ``conn_id`` was sent and may have received, in order."""
    books = server.ledger_reader()
    runs = [d for d in books.deliveries(conn_id) if d.status in ("acked", "unknown")]
    indexes = np.concatenate([np.arange(d.first, d.stop, dtype=np.int64) for d in runs])
    return [int(i) for i in books.ids_of(indexes)]


# ---------------------------------------------------------------------------------------
# Stopping by itself


def test_seconds_records_exactly_what_the_ledger_delivered(start_server, tmp_path):
    server = start_server("--rate", "1000", "--seed", "5", "--rule", RULES[0], "--rule", RULES[1])
    rules = requests.get(
        server.url + "/2/tweets/search/stream/rules", headers=server.headers, timeout=10
    ).json()["data"]
    out = tmp_path / "seconds.ndjson"
    url = server.stream_url + "?stall_warnings=false"
    started = time.time()
    proc = start_recorder(url, out, "--seconds", "2", token=server.token)
    try:
        wait_for_lines(out, proc, 400)
        # Nothing more is created: by the 2 s alarm the recorder has read every tweet the
        # server sent. A tweet still in the recorder's socket buffer at the alarm would be
        # acknowledged by its kernel (the ledger counts it delivered) yet never recorded.
        server.control("PUT", "rate", 0)
        stdout, stderr = proc.popen.communicate(timeout=20)
        finished = time.time()
        assert proc.popen.returncode == 0, stderr
    finally:
        proc.stop()
    assert json.loads(stdout) == {"out": str(out), "end": "seconds"}
    assert server.stop() == 0  # the ledger is final

    capture = read_capture(out)
    assert capture.complete
    assert capture.skipped == []
    end = records(out)[-1]
    assert end["end"] == "seconds"
    assert end["tweets"] == len(capture.tweets)
    assert 2000 <= end["t"] < 6000  # --seconds 2 (from before the request), not more
    assert len(capture.tweets) > 300
    ids = capture.ids.tolist()
    assert np.all(np.diff(capture.ids) > 0)  # strictly increasing

    (conn,) = server.ledger_reader().connections()
    assert ids == delivered_ids(server, conn["conn_id"])

    header = capture.header
    assert header["source"] == server.stream_url  # the query is in params, not here
    assert header["params"] == {"stall_warnings": "false"}
    assert [(r["value"], r["tag"]) for r in header["rules"]] == [
        ("cats", "felines"),
        ("dogs", "canines"),
    ]
    assert header["rules"] == rules  # the server's own, ids and all
    assert started <= header["started_at"] <= finished
    assert server.token.encode() not in out.read_bytes()
    assert server.token not in stdout + stderr


def test_max_tweets_stops_at_exactly_that_many(start_server, tmp_path):
    server = start_server("--rate", "500", "--seed", "6")
    out = tmp_path / "fifty.ndjson"
    code, stdout, stderr = run_recorder(
        server.stream_url, out, "--max-tweets", "50", token=server.token
    )
    assert code == 0, stderr
    assert json.loads(stdout)["end"] == "max_tweets"
    lines = records(out)
    assert sum("tweet" in r for r in lines) == 50
    assert "tweet" in lines[-2]  # it stopped right after the 50th, nothing recorded past it
    assert lines[-1]["end"] == "max_tweets"
    assert lines[-1]["tweets"] == 50
    assert lines[-1]["records"] == len(lines) - 2  # every record but header and end
    capture = read_capture(out)
    assert len(capture.tweets) == 50


def test_an_unreachable_server_ends_the_capture_with_the_error(tmp_path):
    """Nothing listens: the capture is still complete, its end record says why (it holds
    no tweet, so replay refuses it)."""
    out = tmp_path / "refused.ndjson"
    url = f"http://127.0.0.1:{free_port()}/2/tweets/search/stream"
    code, stdout, stderr = run_recorder(url, out, token="tok")
    assert code == 1  # a failed recording is not a good one
    assert "Traceback" not in stderr
    assert json.loads(stdout)["end"].startswith("error: ConnectionRefusedError")
    lines = records(out)
    assert len(lines) == 2
    assert lines[-1]["end"].startswith("error: ConnectionRefusedError")
    assert lines[0]["rules"] is None  # the rules could not be read either
    with pytest.raises(CaptureError, match="no tweet"):
        read_capture(out)


# ---------------------------------------------------------------------------------------
# Stopped from outside


def test_sigint_writes_the_end_record_and_exits_0(start_server, tmp_path):
    server = start_server("--rate", "500", "--seed", "7")
    out = tmp_path / "sigint.ndjson"
    code, stdout, stderr = signal_mid_recording(server, out, signal.SIGINT)
    assert code == 0, stderr
    assert json.loads(stdout)["end"] == "interrupted"
    assert "Traceback" not in stderr
    lines = records(out)  # every line whole JSON, the last ending with its newline
    assert len(lines) > 21
    assert lines[-1]["end"] == "interrupted"
    assert sum("end" in r for r in lines) == 1
    capture = read_capture(out)
    assert capture.complete
    assert lines[-1]["tweets"] == len(capture.tweets)
    assert lines[-1]["records"] == len(lines) - 2
    # Still sending when interrupted: the tweets in flight then (the ledger may count them
    # delivered) are not recorded; everything before them is, in order, none left out.
    assert server.stop() == 0
    (conn,) = server.ledger_reader().connections()
    delivered = delivered_ids(server, conn["conn_id"])
    assert capture.ids.tolist() == delivered[: len(capture.tweets)]


def test_sigkill_leaves_a_capture_refused_strictly_and_whole_when_lenient(start_server, tmp_path):
    server = start_server("--rate", "500", "--seed", "8")
    out = tmp_path / "sigkill.ndjson"
    code, _, _ = signal_mid_recording(server, out, signal.SIGKILL)
    assert code == -signal.SIGKILL

    with pytest.raises(CaptureError, match=r"no end record.*killed"):
        read_capture(out)

    capture = read_capture(out, lenient=True)
    assert capture.complete is False
    # Never silently short: every whole tweet line in the file is in the capture.
    data = out.read_bytes()
    whole = data.split(b"\n")[1:-1]  # past the header; the last piece has no newline
    tweet_ids = [
        int(record["tweet"]["data"]["id"]) for record in map(json.loads, whole) if "tweet" in record
    ]
    assert len(tweet_ids) > 10
    assert len(capture.tweets) == len(tweet_ids)
    assert capture.ids.tolist() == tweet_ids
    # Only a line cut by the kill may have been skipped, and only the last one.
    cut = data.split(b"\n")[-1]
    assert [line for line, _ in capture.skipped] == ([len(whole) + 2] if cut else [])


# ---------------------------------------------------------------------------------------
# Bad options: exit 2 naming the option, nothing written

NOWHERE = "http://127.0.0.1:9/2/tweets/search/stream"  # never reached: options fail first


@pytest.fixture
def refused(monkeypatch, capsys):
    """Run ``record`` in this process (options are checked before anything is opened):
    assert it exits 2 with no traceback; its stderr."""

    def run(url: str, out: Path, *args: str, token: str | None) -> str:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        if token is not None:
            monkeypatch.setenv(TOKEN_ENV, token)
        argv = ["record", "--url", url, "--token-env", TOKEN_ENV, "--out", str(out), *args]
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        return capsys.readouterr().err

    return run


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--seconds", "-1"], "--seconds: must be > 0"),
        (["--seconds", "nan"], "--seconds"),
        (["--seconds", "soon"], "--seconds: expected a number"),
        (["--max-tweets", "0"], "--max-tweets: must be > 0"),
        (["--max-tweets", "2.5"], "--max-tweets: expected an integer"),
    ],
)
def test_bad_limits_exit_2(tmp_path, refused, args, names):
    out = tmp_path / "out.ndjson"
    assert names in refused(NOWHERE, out, *args, token="tok")
    assert not out.exists()


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1/x", "http:///no-host"])
def test_a_bad_url_exits_2(tmp_path, refused, url):
    out = tmp_path / "out.ndjson"
    assert "--url" in refused(url, out, token="tok")
    assert not out.exists()


@pytest.mark.parametrize("token", [None, "   "])
def test_an_unset_or_empty_token_variable_exits_2(tmp_path, refused, token):
    out = tmp_path / "out.ndjson"
    stderr = refused(NOWHERE, out, token=token)
    assert "--token-env" in stderr
    assert TOKEN_ENV in stderr
    assert not out.exists()


def test_an_existing_out_file_is_left_untouched(tmp_path, refused):
    out = tmp_path / "precious.ndjson"
    out.write_bytes(b"precious")
    stderr = refused(NOWHERE, out, token="secret-token-value")
    assert "--out" in stderr
    assert "exists" in stderr
    assert "secret-token-value" not in stderr
    assert out.read_bytes() == b"precious"
