"""``validate_server_options``: every server option checked once, for the command line and
a scenario's ``[server]`` table alike; errors start with the option's name."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fake_stream.config import OPTIONS, ServerConfig, server_config, validate_server_options

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch: must be >= 1"),  # spun at 85 % CPU sending nothing
        ({"keepalive": 0}, "keepalive: must be >= 0.1"),  # 4.8 MB of line breaks in 4 s
        ({"connect_limit": -1}, "connect_limit: must be >= 0"),  # refused everything
        ({"queue_size": -5}, "queue_size: must be >= 0"),
        ({"retention": -1}, "retention: must be >= 0"),
        ({"settle_timeout": -0.5}, "settle_timeout: must be >= 0"),
        ({"request_timeout": 0}, "request_timeout: must be >= 0.1"),
        ({"max_connections": 0}, "max_connections: must be >= 1"),
        ({"port": 70000}, "port: must be <= 65535"),
        ({"port": "http"}, "port: expected an integer"),
        ({"send_buffer": 2**40}, "send_buffer: must be <="),
        ({"t0_ms": 5}, "t0_ms: must be >="),
        ({"seed": 2**70}, "seed: must be <="),
        ({"seed": True}, "seed: expected an integer"),
        ({"rate": "inf"}, "rate: expected a finite number"),
        ({"rate": math.nan}, "rate: expected a finite number"),
        ({"rate": 10**400}, "rate: expected a finite number"),
        ({"keepalive": "Infinity"}, "keepalive: expected a finite number"),
        ({"profile": '{"kind": "constant", "rate": NaN}'}, "profile: rate profile"),
        ({"rate": 5, "profile": "5"}, "profile: give rate or profile, not both"),
        ({"fault": "@/nonexistent/fault.json"}, "fault[0]: cannot read"),
        ({"fault": '{"type": "latency"'}, "fault[0]: not valid JSON"),
        ({"fault": {"type": "bandwidth", "attributes": {"rate": 1e308}}}, "fault[0].attributes"),
        ({"fault": '{"type": "bandwidth", "attributes": {"rate": Infinity}}'}, "fault[0]"),
        ({"fault": {"type": "timeout", "schedule": {"at": math.nan}}}, "fault[0].schedule.at"),
        ({"faults": {"type": "latency"}}, "faults: expected a list"),
        ({"rule": '{"value": 5}'}, "rule[0]: Each rule needs a string 'value'"),
        ({"rule": [{"value": "a"}, {"value": " a "}]}, "rule: the same value twice"),
        ({"token": ["ok", "not ok"]}, "token[1]: expected 1..256 visible ASCII"),
        ({"log_level": "loud"}, "log_level: expected one of"),
        ({"host": "0.0.0.0"}, "host: 0.0.0.0 is not a loopback address"),
        ({"host": "no such host.invalid"}, "host: 'no such host.invalid' is not an IPv4"),
        ({"allow_remote": "yes"}, "allow_remote: expected true or false"),
        ({"colour": "red"}, "colour: unknown server option"),
    ],
)
def test_bad_options_raise_value_error_starting_with_the_name(options, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        validate_server_options(options)


def test_existing_ledger_is_refused(tmp_path):
    ledger = tmp_path / "l.sqlite"
    ledger.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^ledger: .* exists"):
        validate_server_options({"ledger": str(ledger)})


def test_text_and_native_values_give_the_same_canonical_options():
    """The command line gives text, a TOML table numbers: both end up the same."""
    as_text = {"queue_size": "2000", "keepalive": "0.5", "port": "0", "seed": "-3"}
    as_toml = {"queue_size": 2000, "keepalive": 0.5, "port": 0, "seed": -3}
    assert validate_server_options(as_text) == validate_server_options(as_toml) == as_toml
    assert validate_server_options({"allow_remote": True, "host": "0.0.0.0"})["host"] == "0.0.0.0"
    assert validate_server_options({"queue_size": None}) == {}  # None: not given


def test_every_server_table_in_the_shipped_scenarios_is_valid():
    """Scenario files spell options as the validator does (the runner turns them into
    ``--queue-size`` and so on)."""
    tables: list[dict[str, Any]] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("server"), dict):
                tables.append(value["server"])
            for child in value.values():
                collect(child)
        elif isinstance(value, list):
            for child in value:
                collect(child)

    for path in sorted(SCENARIOS.glob("*.toml")):
        collect(tomllib.loads(path.read_text()))
    assert tables, "no [server] table found: the scenarios moved?"
    for table in tables:
        assert set(validate_server_options(table)) == set(table)


def test_server_config_takes_every_validated_option(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("a\nb\n")
    options = validate_server_options(
        {
            "token": ["cli"],
            "token_file": str(tokens),
            "rate": "250",
            "max_batch": "64",
            "request_timeout": "3",
            "max_connections": "9",
            "rule": ['{"value": "x", "tag": "t"}'],
            "fault": ['{"type": "latency"}'],
            "ledger": str(tmp_path / "l.sqlite"),
        }
    )
    config = server_config(options)
    assert config.tokens == ("cli", "a", "b")
    assert config.profile.rate_at(0) == 250
    assert (config.max_batch, config.request_timeout, config.max_connections) == (64, 3.0, 9)
    assert config.rules == [{"value": "x", "tag": "t"}]
    assert config.faults == [{"type": "latency"}]
    assert config.ledger == tmp_path / "l.sqlite"
    assert server_config({}).max_batch == ServerConfig.max_batch


def test_every_option_of_the_command_line_is_validated():
    """The CLI's options and the validator's are the same set (one place checks them)."""
    from fake_stream.__main__ import REPLAY_OPTIONS, parser

    serve = parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    names = {a.dest for a in serve._actions if a.dest != "help"}
    assert names - set(REPLAY_OPTIONS) == set(OPTIONS)  # --replay ... becomes profile
