"""Capture files: what ``read_capture`` accepts, what it refuses (naming the file and the
exact line), what lenient mode skips, the writer's round trip, and ``serve --replay``
refusing a bad capture (or bad replay options) before it starts."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from fake_stream.__main__ import main
from fake_stream.capture import CaptureError, CaptureWriter, read_capture

HEADER = {
    "capture": 1,
    "source": "http://127.0.0.1:1/2/tweets/search/stream",
    "params": {},
    "rules": None,
    "started_at": 1_700_000_000.0,
    "recorder": "hand-written",
}


def tweet(t: float, tweet_id: object) -> dict:
    return {"t": t, "tweet": {"data": {"id": tweet_id, "text": f"tweet {tweet_id}"}}}


def end(t: float, reason: str = "seconds", records: int | None = None) -> dict:
    """An end record; ``records`` None: the count of records before it (filled by write)."""
    return {"t": t, "end": reason, "records": records, "tweets": 0}


def write(tmp_path: Path, *records: object, newline: bool = True, name: str = "c.ndjson") -> Path:
    """One capture file: dicts and lists as JSON lines, str and bytes as they are."""
    lines = []
    for record in records:
        if isinstance(record, dict) and "end" in record and record["records"] is None:
            record = {**record, "records": len(lines) - 1}  # all but the header
        if isinstance(record, bytes):
            lines.append(record)
        elif isinstance(record, str):
            lines.append(record.encode())
        else:
            lines.append(json.dumps(record).encode())
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + (b"\n" if newline else b""))
    return path


def refused(path: Path, line: int | None, **kwargs: bool) -> str:
    """The CaptureError message, checked to start with the file and (if given) the line."""
    with pytest.raises(CaptureError) as caught:
        read_capture(path, **kwargs)
    message = str(caught.value)
    prefix = f"{path}: line {line}: " if line is not None else f"{path}: "
    assert message.startswith(prefix), message
    return message


# ---------------------------------------------------------------------------------------
# A good capture


def test_a_good_capture_is_read_in_order_with_every_kind_of_record(tmp_path):
    path = write(
        tmp_path,
        HEADER,
        tweet(0.5, "101"),
        {"t": 1.0, "keepalive": True},
        tweet(1.25, "105"),
        {"t": 2.0, "message": {"errors": [{"title": "operational-disconnect"}]}},
        {"t": 2.5, "raw": "not json"},
        tweet(2.5, "200"),  # the same t as the record before: offsets may repeat
        end(30.0),
    )
    capture = read_capture(path)
    assert capture.ids.tolist() == [101, 105, 200]
    assert capture.offsets_us.tolist() == [500, 1250, 2500]
    assert capture.lines == [2, 4, 7]
    assert capture.duration_us == 30_000  # the end record's t, not the last tweet's
    assert capture.complete
    assert capture.skipped == []
    assert capture.header["recorder"] == "hand-written"
    assert [m["data"]["text"] for m in capture.tweets] == ["tweet 101", "tweet 105", "tweet 200"]
    assert capture.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# Refused, naming the file and the line


def test_a_line_that_is_not_json_names_its_line(tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), "{not json", tweet(3, "3"), end(4))
    message = refused(path, 3)
    assert "not JSON" in message
    assert "lenient" in message  # the way out is named


@pytest.mark.parametrize(
    ("value", "kind"), [([1, 2], "list"), ('"text"', "str"), (7, "int"), ("null", "NoneType")]
)
def test_a_json_value_that_is_not_an_object_is_refused(tmp_path, value, kind):
    path = write(tmp_path, HEADER, tweet(1, "1"), value, end(4))
    assert f"expected a JSON object, got {kind}" in refused(path, 3)


@pytest.mark.parametrize(
    "message",
    [
        {"data": {"text": "no id"}},
        {"data": "not an object"},
        {"no_data": True},
        [],
    ],
)
def test_a_tweet_without_data_id_is_refused(tmp_path, message):
    path = write(tmp_path, HEADER, tweet(1, "1"), {"t": 2, "tweet": message}, end(4))
    assert "data.id" in refused(path, 3)


@pytest.mark.parametrize(
    "bad_id",
    [
        12,  # a number, not a string
        "12a",
        "",
        "-5",
        "\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes, X's ids never are
        "\uff11",  # a full-width 1: int() takes it
        str(2**63),  # does not fit the ledger's int64
    ],
)
def test_a_tweet_id_that_is_not_a_string_of_digits_is_refused(tmp_path, bad_id):
    path = write(tmp_path, HEADER, tweet(1, "1"), tweet(2, bad_id), end(4))
    assert "data.id" in refused(path, 3)


def test_offsets_going_back_name_both_lines(tmp_path):
    path = write(
        tmp_path, HEADER, tweet(1, "1"), tweet(5, "2"), {"t": 4.5, "keepalive": True}, end(9)
    )
    message = refused(path, 4)
    assert "(line 3)" in message  # the earlier record it goes back from
    assert "must not decrease" in message


@pytest.mark.parametrize(
    "record",
    [
        {"t": -1, "keepalive": True},
        {"t": "1", "keepalive": True},
        {"t": True, "keepalive": True},
        {"keepalive": True},  # no t at all
        {"t": 2},  # no kind
        {"t": 2, "keepalive": True, "raw": "x"},  # two kinds
    ],
)
def test_a_record_without_one_kind_and_a_valid_t_is_refused(tmp_path, record):
    path = write(tmp_path, HEADER, tweet(1, "1"), record, end(4))
    refused(path, 3)


@pytest.mark.parametrize("kept_ids", [True, False])
def test_a_duplicate_id_names_the_line_it_first_came_at(tmp_path, kept_ids):
    path = write(tmp_path, HEADER, tweet(1, "101"), tweet(2, "102"), tweet(3, "101"), end(4))
    message = refused(path, 4, kept_ids=kept_ids)
    assert "already came at line 2" in message


def test_decreasing_ids_need_shift_ids(tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "105"), tweet(2, "103"), tweet(3, "104"), end(4))
    message = refused(path, 3, kept_ids=True)
    assert "shift_ids" in message
    assert "(line 2)" in message  # the tweet whose id it is not above
    # Re-minted ids (shift_ids) need no order: the capture is accepted as recorded.
    capture = read_capture(path, kept_ids=False)
    assert capture.ids.tolist() == [105, 103, 104]
    assert capture.lines == [2, 3, 4]


def test_an_end_record_that_counts_otherwise_says_records_were_lost(tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), tweet(2, "2"), end(3, records=5))
    message = refused(path, 4)
    assert "counts 5 records, the capture holds 2" in message


def test_a_record_after_the_end_record_is_refused(tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), end(2), tweet(3, "3"))
    assert "after the end record of line 3" in refused(path, 4)


@pytest.mark.parametrize(
    "first",
    [
        tweet(1, "1"),  # the header is missing: the file starts with a record
        {**HEADER, "capture": 2},  # a format this reader does not know
        {"capture": "1"},
        "not json",
        [HEADER],
    ],
)
def test_a_missing_or_bad_header_is_a_line_1_error(tmp_path, first):
    path = write(tmp_path, first, tweet(2, "2"), end(3))
    refused(path, 1)


def test_an_empty_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "empty.ndjson"
    path.write_bytes(b"")
    assert "no capture header" in refused(path, None)


def test_a_missing_file_is_refused_naming_it(tmp_path):
    assert "cannot read" in refused(tmp_path / "missing.ndjson", None)


def test_a_capture_without_tweets_is_refused(tmp_path):
    path = write(tmp_path, HEADER, {"t": 20000, "keepalive": True}, end(30000))
    assert "no tweet" in refused(path, None)
    # Lenient takes what is there; with nothing there, there is still nothing to replay.
    assert "no tweet" in refused(path, None, lenient=True)


def test_a_capture_without_its_end_record_is_refused_as_killed(tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), tweet(2, "2"))
    message = refused(path, None)
    assert "no end record after line 3" in message
    assert "killed" in message
    assert "lenient" in message


def test_a_last_line_cut_short_is_named_as_such(tmp_path):
    cut = json.dumps(tweet(3, "3"))[:25]
    path = write(tmp_path, HEADER, tweet(1, "1"), tweet(2, "2"), cut, newline=False)
    message = refused(path, 4)
    assert "cut short" in message
    # The same bytes followed by a newline were written whole, then damaged: not a cut.
    whole = write(tmp_path, HEADER, tweet(1, "1"), cut, end(4), name="damaged.ndjson")
    assert "not JSON" in refused(whole, 3)


# ---------------------------------------------------------------------------------------
# Lenient


def test_lenient_skips_bad_records_and_lists_them(tmp_path):
    path = write(
        tmp_path,
        HEADER,
        tweet(1, "10"),  # 2
        "{not json",  # 3
        tweet(2, "20"),  # 4
        {"t": 3, "tweet": {"data": {}}},  # 5: no id
        tweet(4, "10"),  # 6: a duplicate of line 2
        tweet(5, "15"),  # 7: below line 4's id
        {"t": 1, "keepalive": True},  # 8: goes back in time
        tweet(6, "30"),  # 9
        json.dumps(tweet(7, "40"))[:20],  # 10: cut short, and no end record
        newline=False,
    )
    capture = read_capture(path, lenient=True)
    assert capture.ids.tolist() == [10, 20, 30]
    assert capture.lines == [2, 4, 9]
    assert capture.offsets_us.tolist() == [1000, 2000, 6000]
    assert [line for line, _ in capture.skipped] == [3, 5, 6, 7, 8, 10]
    why = dict(capture.skipped)
    assert "not JSON" in why[3]
    assert "data.id" in why[5]
    assert "already came at line 2" in why[6]
    assert "shift_ids" in why[7]
    assert "must not decrease" in why[8]
    assert "cut short" in why[10]
    assert capture.complete is False
    assert capture.duration_us == 6000  # the last good record's t, without an end record
    described = capture.describe()
    assert described["complete"] is False
    assert described["skipped"][0] == {"line": 3, "why": why[3]}


def test_lenient_accepts_a_capture_without_its_end_record(tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), tweet(2.5, "2"))
    capture = read_capture(path, lenient=True)
    assert capture.complete is False
    assert capture.ids.tolist() == [1, 2]
    assert capture.skipped == []
    assert capture.duration_us == 2500


def test_lenient_skips_records_after_the_end_record_and_stays_complete(tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), end(2), tweet(3, "3"))
    capture = read_capture(path, lenient=True)
    assert capture.ids.tolist() == [1]
    assert capture.complete is True
    assert [line for line, _ in capture.skipped] == [4]


@pytest.mark.parametrize("first", [tweet(1, "1"), "not json", {"capture": 99}])
def test_lenient_still_refuses_a_bad_header(tmp_path, first):
    path = write(tmp_path, first, tweet(2, "2"), tweet(3, "3"), end(4))
    message = refused(path, 1, lenient=True)
    assert "replay with lenient" not in message  # nothing to skip to: it would not help


# ---------------------------------------------------------------------------------------
# Writer -> reader


def test_writer_round_trip(tmp_path):
    path = tmp_path / "written.ndjson"
    writer = CaptureWriter(path, {"source": "http://example.test/2/x", "rules": [], "params": {}})
    writer.add(0.5, "tweet", {"data": {"id": "1001", "text": "a"}})  # line 2
    writer.add(1.25, "keepalive", True)  # 3
    writer.add(7.125, "tweet", {"data": {"id": "1003", "text": "b"}, "matching_rules": []})  # 4
    writer.add(8.0, "message", {"errors": [{"title": "x"}]})  # 5
    writer.add(9.0, "raw", "garbage")  # 6
    writer.add(10.00049, "tweet", {"data": {"id": "1010", "text": "c"}})  # 7: rounded to µs
    writer.end(12.5, "max_tweets")  # 8
    assert writer.records == 6
    assert writer.tweets == 3

    capture = read_capture(path)
    assert capture.ids.tolist() == [1001, 1003, 1010]
    assert capture.offsets_us.tolist() == [500, 7125, 10000]
    assert capture.lines == [2, 4, 7]
    assert capture.duration_us == 12_500
    assert capture.complete
    assert capture.header["capture"] == 1
    assert capture.header["source"] == "http://example.test/2/x"
    assert capture.tweets[1] == {"data": {"id": "1003", "text": "b"}, "matching_rules": []}

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # every record ends with its newline
    last = json.loads(lines[-2])
    assert last == {"t": 12.5, "end": "max_tweets", "records": 6, "tweets": 3}


def test_writer_never_overwrites(tmp_path):
    path = tmp_path / "precious.ndjson"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        CaptureWriter(path, {})
    assert path.read_bytes() == b"precious"


# ---------------------------------------------------------------------------------------
# serve --replay: a bad capture or option exits 2 before anything starts


@pytest.fixture
def serve(monkeypatch, capsys):
    """``serve`` in this process (options, the capture included, are checked before
    anything starts): its exit code and stderr; nothing may have started."""

    def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
        ledger = tmp_path / "ledger.sqlite"
        with pytest.raises(SystemExit) as exit_:
            main(["serve", "--ledger", str(ledger), "--token", "t", *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        assert not ledger.exists()  # nothing was started
        assert out == ""  # no announcement
        return subprocess.CompletedProcess(args, exit_.value.code, out, err)

    return run


@pytest.fixture
def good_capture(tmp_path: Path) -> Path:
    return write(tmp_path, HEADER, tweet(1, "1"), tweet(2, "2"), end(3), name="good.ndjson")


def test_serve_refuses_a_bad_capture_naming_replay_and_the_line(serve, tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), "{not json", end(4))
    result = serve(tmp_path, "--replay", str(path))
    assert result.returncode == 2
    assert "--replay" in result.stderr
    assert f"{path}: line 3:" in result.stderr


def test_serve_refuses_a_killed_capture_unless_lenient_is_asked(serve, tmp_path):
    path = write(tmp_path, HEADER, tweet(1, "1"), tweet(2, "2"))
    result = serve(tmp_path, "--replay", str(path))
    assert result.returncode == 2
    assert "--replay" in result.stderr
    assert "no end record" in result.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--loop"], "shift_ids"),
        (["--speed", "0"], "speed"),
        (["--speed", "nan"], "speed"),
        (["--rate", "10"], "--rate"),
        (["--replay-start", "later"], "start"),
    ],
)
def test_serve_refuses_bad_replay_options(serve, tmp_path, good_capture, args, names):
    result = serve(tmp_path, "--replay", str(good_capture), *args)
    assert result.returncode == 2
    assert "--replay" in result.stderr
    assert names in result.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--speed", "2"], "--speed"),
        (["--loop"], "--loop"),
    ],
)
def test_replay_options_without_replay_are_refused(serve, tmp_path, args, option):
    result = serve(tmp_path, *args)
    assert result.returncode == 2
    assert f"{option}: only with --replay" in result.stderr


def test_serve_refuses_a_missing_capture(serve, tmp_path):
    result = serve(tmp_path, "--replay", str(tmp_path / "missing.ndjson"))
    assert result.returncode == 2
    assert "--replay" in result.stderr
    assert "missing.ndjson" in result.stderr
