"""Scenario files that crashed the loader or passed it wrongly (issue 14): each is refused
before anything starts, as ``python -m harness run`` exit 2 naming the file and the field,
never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.scenario import MAX_SCENARIOS, ScenarioError, load, load_many

BASE = 'name = "x"\nvariant = "naive_loop"\n'


def _write(folder: Path, text: str | bytes, name: str = "x.toml") -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI; assert it refused with exit 2 and no traceback; its message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# Each: the file's text (after BASE unless it starts with "!"), and what the message says
# after "<file>: ".
CASES = {
    "retries below 0": ("task = {retries = -1}", "task.retries: Input should be greater than"),
    "retry_delay nan": ("task = {retry_delay = nan}", "task.retry_delay: nan is not a finite"),
    "retry_delay as text": (
        'task = {retry_delay = "nan"}',
        "task.retry_delay: Input should be a valid number",
    ),
    "execution_timeout below 0": (
        "task = {execution_timeout = -5}",
        "task.execution_timeout: Input should be greater than 0",
    ),
    "retries true": ("task = {retries = true}", "task.retries: Input should be a valid integer"),
    "cpu_us lots": (
        'params = {cpu_us = "lots"}',
        "params: Value error, cpu_us: Input should be a valid number, got 'lots'",
    ),
    "batch 0": ("params = {batch = 0}", "params: Value error, batch: Input should be greater"),
    "pause_task duration inf": (
        'airflow_faults = [{type = "pause_task", at = 1, duration = inf}]',
        "airflow_faults[0].duration: inf is not a finite number",
    ),
    # A string pydantic turns into a float: the field's own bound refuses it, same field.
    "pause_task duration 'inf'": (
        'airflow_faults = [{type = "pause_task", at = 1, duration = "inf"}]',
        "airflow_faults[0].duration: Input should be less than or equal to 3600",
    ),
    # Finite but huge: Event.wait overflowed after the SIGSTOP, leaving the try stopped.
    "pause_task duration 1e300": (
        'airflow_faults = [{type = "pause_task", at = 1, duration = 1e300}]',
        "airflow_faults[0].duration: Input should be less than or equal to 3600",
    ),
    # prlimit overflowed on it
    "memory_limit limit_mb 1e300": (
        'airflow_faults = [{type = "memory_limit", at = 1, limit_mb = 1e300}]',
        "airflow_faults[0].limit_mb: Input should be less than or equal to 1048576",
    ),
    "memory_limit limit_mb inf": (
        'airflow_faults = [{type = "memory_limit", at = 1, limit_mb = inf}]',
        "airflow_faults[0].limit_mb: inf is not a finite number",
    ),
    "fault at -inf": (
        'airflow_faults = [{type = "kill_task", at = -inf}]',
        "airflow_faults[0].at: -inf is not a finite number",
    ),
    "stream fault attribute nan": (
        'stream_faults = [{type = "latency", attributes = {latency = nan}}]',
        "stream_faults[0].attributes.latency: nan is not a finite number",
    ),
    "rate inf": ("rate = inf", "rate: inf is not a finite number"),
    "server option inf": ("server = {queue_size = inf}", "server.queue_size: inf is not a"),
    "duration nan": ("duration = nan", "duration: nan is not a finite number"),
    "server option out of range": (
        "server = {max_batch = 0}",
        "server: Value error, max_batch: ",
    ),
    "server option unknown": ("server = {bogus = 1}", "server: Value error, bogus: unknown"),
    "server on every address": (
        'server = {host = "0.0.0.0"}',
        "server: Value error, host: set by the harness",
    ),
    "unknown metric": (
        'hypothesis = ["lsot == 0"]',
        "hypothesis[0].text: Value error, unknown metric 'lsot'",
    ),
    "unknown metrics.json field": (
        'hypothesis = ["queue.lsot == 0"]',
        "hypothesis[0].text: Value error, unknown metric 'queue.lsot': queue has no 'lsot'",
    ),
    "a count compared with a word": (
        'hypothesis = ["lost == none"]',
        "hypothesis[0].text: Value error, lost is a number; 'none' is not one",
    ),
    "matrix = 5": ("!matrix = 5", "matrix: Input should be a valid dictionary"),
    "matrix variants not a list": (
        '!matrix = {variants = "naive_loop"}',
        "matrix.variants: Input should be a valid list",
    ),
    "matrix fault set not a table": (
        '!fault_sets = {a = 5}\n[matrix]\nvariants = ["naive_loop"]',
        "fault_sets.a: Input should be a valid dictionary",
    ),
    "matrix with a bad quick regex": (
        '!matrix = {variants = ["naive_loop"], quick = "("}',
        "matrix.quick: Value error, not a valid regular expression",
    ),
    "matrix of nothing": ("!matrix = {}", "matrix: expands to no scenario"),
    "deep array": ("!a = " + "[" * 5000 + "]" * 5000, "(file): nested deeper than 16 levels"),
    "array deep but parsable": ("params = {x = " + "[" * 100 + "]" * 100 + "}", "params.x"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_gap_is_refused_naming_file_and_field(tmp_path, capsys, case):
    text, message = CASES[case]
    body = text[1:] if text.startswith("!") else BASE + text
    path = _write(tmp_path, body)
    err = _refused(capsys, ["run", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    assert err.startswith(f"{path}: "), err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_a_file_not_utf8_is_refused(tmp_path, capsys):
    path = _write(tmp_path, BASE.encode() + b'description = "caf\xe9"\n')
    err = _refused(capsys, ["list", str(path)])
    assert err.startswith(f"{path}: (file): not UTF-8 text (byte 0xe9 at offset ")


def test_a_matrix_that_includes_itself_or_a_cycle_is_refused(tmp_path, capsys):
    itself = _write(tmp_path, 'matrix = {files = ["x.toml"]}')
    err = _refused(capsys, ["list", str(itself)])
    assert err.startswith(f"{itself}: matrix.files[0]: x.toml includes this file: a cycle")
    a = _write(tmp_path, 'matrix = {files = ["b.toml"]}', "a.toml")
    b = _write(tmp_path, 'matrix = {files = ["sub/../a.toml"]}', "b.toml")
    (tmp_path / "sub").mkdir()
    err = _refused(capsys, ["list", str(a)])
    assert err.startswith(f"{b}: matrix.files[0]: sub/../a.toml includes this file: a cycle")
    _write(tmp_path, 'matrix = {files = ["missing.toml"]}', "c.toml")
    err = _refused(capsys, ["list", str(tmp_path / "c.toml")])
    assert err.startswith(f"{tmp_path / 'missing.toml'}: cannot read (No such file")


def test_a_matrix_larger_than_the_cap_is_refused_before_it_expands(tmp_path, capsys):
    params = ", ".join(f"{{cpu_us = {i}}}" for i in range(100))
    rates = ", ".join(str(100 + i) for i in range(100))
    path = _write(tmp_path, f'[matrix]\nvariants = ["naive_loop"]\nrates = [{rates}]\n'
                  f"params = [{params}]\n")  # fmt: skip
    err = _refused(capsys, ["run", str(path), "--dry-run"])
    assert err.startswith(f"{path}: matrix: 10,000 scenarios, more than the {MAX_SCENARIOS}")
    # At the cap it loads; the cap counts scenarios over every file of the run.
    at_cap = _write(tmp_path, f'[matrix]\nvariants = ["naive_loop"]\nrates = [{rates}]\n'
                    f"params = [{', '.join(params.split(', ')[:5])}]\n", "cap.toml")  # fmt: skip
    assert len(load(at_cap)) == MAX_SCENARIOS
    other = _write(tmp_path, BASE, "other.toml")
    with pytest.raises(ScenarioError, match=f"501 scenarios, more than the {MAX_SCENARIOS}"):
        load_many([at_cap, other])


def test_a_bad_only_regex_and_a_quick_without_pattern_are_refused(tmp_path, capsys):
    path = _write(tmp_path, BASE)
    err = _refused(capsys, ["run", str(path), "--only", "("])
    assert err.startswith("--only: not a valid regular expression (missing ), unterminated")
    err = _refused(capsys, ["run", str(path), "--quick"])
    assert err.startswith("--quick: no file given has a matrix.quick pattern")


def test_a_relative_rate_file_is_read_from_the_scenario_folder(tmp_path, monkeypatch):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "points.csv").write_text("seconds,rate\n0,100\n5,300\n")
    path = _write(folder, BASE + 'rate = {kind = "piecewise", file = "points.csv"}')
    monkeypatch.chdir(tmp_path)  # the working folder has no points.csv
    (scenario,) = load(Path("scenarios/x.toml"))
    assert scenario.rate["file"] == str(folder / "points.csv")
    # The server gets the absolute path, whatever its working folder.
    assert json.loads(scenario.model_dump_json())["rate"]["file"] == str(folder / "points.csv")
    (folder / "points.csv").unlink()
    with pytest.raises(ScenarioError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}: rate: Value error, rate profile file: cannot")


def test_a_replayed_capture_is_read_from_the_scenario_folder_and_checked(tmp_path, capsys):
    folder = tmp_path / "scenarios"
    (folder / "captures").mkdir(parents=True)
    shipped = Path(__file__).parents[2] / "scenarios/captures/burst.ndjson"
    lines = shipped.read_bytes().splitlines(keepends=True)
    (folder / "captures/good.ndjson").write_bytes(b"".join(lines))
    rate = 'rate = {replay = "captures/good.ndjson", speed = 2.0}'
    (scenario,) = load(_write(folder, BASE + rate))
    assert scenario.rate["replay"] == str(folder / "captures/good.ndjson")
    # A capture with a bad line: refused at load, naming the scenario, the field, the
    # capture and its line; nothing starts.
    t = json.loads(lines[1])["t"]  # as late as the tweet before it: only the id is wrong
    no_id = json.dumps({"t": t, "tweet": {"data": {"text": "no id"}}}).encode() + b"\n"
    bad = [*lines[:2], no_id, *lines[2:]]
    (folder / "captures/bad.ndjson").write_bytes(b"".join(bad))
    path = _write(folder, BASE + 'rate = {replay = "captures/bad.ndjson"}', "bad.toml")
    err = _refused(capsys, ["run", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    assert err.startswith(f"{path}: rate: Value error, rate profile replay: "), err
    assert f"{folder / 'captures/bad.ndjson'}: line 3: tweet: expected data.id" in err
    # A loop that would repeat the recorded ids is refused the same way.
    path = _write(folder, BASE + 'rate = {replay = "captures/good.ndjson", loop = true}', "l.toml")
    err = _refused(capsys, ["run", str(path), "--dry-run"])
    assert "rate profile loop: a second pass would repeat the recorded ids" in err
    assert not (tmp_path / "out").exists()


def test_dry_run_validates_and_starts_nothing(tmp_path, capsys):
    path = _write(tmp_path, BASE)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["x", "run"]
    assert lines[-1] == "1 scenarios valid; nothing started (--dry-run)"
    assert not out.exists()


def test_the_shipped_scenarios_still_load():
    scenarios = load_many(sorted(Path(__file__).parents[2].glob("scenarios/*.toml")))
    assert len(scenarios) >= 60
    # What the file sets is what scenario.json says: unset task settings stay out of it.
    dumped = {s.name: json.loads(s.model_dump_json(by_alias=True)) for s in scenarios}
    assert dumped["naive_loop-none"]["task"] == {"retries": 2, "retry_delay": 1.0}
    assert dumped["naive_loop-timeout"]["task"]["execution_timeout"] == 5.0
