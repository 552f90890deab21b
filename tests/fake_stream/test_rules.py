"""``GET``/``POST /2/tweets/search/stream/rules`` against a live server, and how the rules
shape the filtered stream (matching_rules, and no tweets at all without rules)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from harness.run.services import StreamServerProcess
from tests.fake_stream._clients import assert_problem

RULES = "/2/tweets/search/stream/rules"
SEARCH = "/2/tweets/search/stream"
DEFAULT_RULE = {"value": "lang:en OR lang:es OR lang:fr OR lang:ja", "tag": "all"}


class Rules:
    """A tiny client of the rules endpoint (raw requests: we check the wire shapes)."""

    def __init__(self, server: StreamServerProcess) -> None:
        self.url = server.url + RULES
        self.session = requests.Session()
        self.session.headers.update(server.headers)

    def get(self, **params: str) -> requests.Response:
        return self.session.get(self.url, params=params, timeout=10)

    def post(self, body: Any = None, data: bytes | None = None, **params: str):
        return self.session.post(self.url, json=body, data=data, params=params, timeout=10)

    def current(self) -> list[dict[str, str]]:
        response = self.get()
        assert response.status_code == 200
        return response.json().get("data", [])

    def reset_to(self, *rules: dict[str, str]) -> list[dict[str, str]]:
        assert self.post(delete_all="true").status_code == 200
        if rules:
            assert self.post({"add": list(rules)}).status_code in (200, 201)
        return self.current()


@pytest.fixture(scope="module")
def rules_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServerProcess]:
    """One server for the shape tests; each test sets the rules it needs first."""
    ledger = tmp_path_factory.mktemp("rules") / "ledger.sqlite"
    with StreamServerProcess(
        ledger, ["--rate", "100", "--seed", "8"], token="rules-token"
    ) as server:
        yield server


@pytest.fixture
def rules(rules_server: StreamServerProcess) -> Iterator[Rules]:
    client = Rules(rules_server)
    yield client
    client.session.close()


def _sent_is_now(meta: dict[str, Any]) -> None:
    """``meta.sent`` is an ISO time (UTC, ``Z``) close to now (same machine)."""
    assert meta["sent"].endswith("Z")
    sent = dt.datetime.fromisoformat(meta["sent"].replace("Z", "+00:00"))
    assert abs(sent.timestamp() - time.time()) < 30


def test_get_rules_lists_the_start_up_rule_with_x_shape(start_server):
    """GET: {"data": [{"id", "value", "tag"}], "meta": {"sent", "result_count"}} with
    string ids, and the x-rate-limit headers of the 450/15 min rules limit."""
    server = start_server("--rate", "10")
    response = Rules(server).get()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "meta"}
    (rule,) = body["data"]
    assert set(rule) == {"id", "value", "tag"}
    assert rule["id"].isdigit()
    assert {"value": rule["value"], "tag": rule["tag"]} == DEFAULT_RULE
    assert set(body["meta"]) == {"sent", "result_count"}
    assert body["meta"]["result_count"] == 1
    _sent_is_now(body["meta"])
    assert response.headers["x-rate-limit-limit"] == "450"
    assert response.headers["x-rate-limit-remaining"] == "449"
    assert int(response.headers["x-rate-limit-reset"]) > time.time()


def test_add_returns_data_with_ids_and_summary(rules):
    """POST {"add": [...]}: data lists the created rules with new ids, in order;
    meta.summary counts created / not_created / valid / invalid; GET then has them."""
    rules.reset_to()
    response = rules.post({"add": [{"value": "cats", "tag": "c"}, {"value": "dogs"}]})
    assert 200 <= response.status_code < 300
    body = response.json()
    assert set(body) == {"data", "meta"}
    assert [(r["value"], r["tag"]) for r in body["data"]] == [("cats", "c"), ("dogs", "")]
    ids = [r["id"] for r in body["data"]]
    assert all(i.isdigit() for i in ids)
    assert len(set(ids)) == 2
    _sent_is_now(body["meta"])
    assert body["meta"]["summary"] == {"created": 2, "not_created": 0, "valid": 2, "invalid": 0}
    assert sorted(r["id"] for r in rules.current()) == sorted(ids)
    # ?ids= selects.
    only = rules.get(ids=ids[1]).json()
    assert [r["value"] for r in only["data"]] == ["dogs"]
    assert only["meta"]["result_count"] == 1


def test_duplicate_value_is_an_error_entry_not_a_second_rule(rules):
    """A value that already exists is refused with an errors entry titled DuplicateRule;
    valid rules of the same request are still created."""
    (existing,) = rules.reset_to({"value": "cats", "tag": "c"})
    response = rules.post({"add": [{"value": "cats", "tag": "again"}, {"value": "birds"}]})
    assert 200 <= response.status_code < 300
    body = response.json()
    assert [r["value"] for r in body["data"]] == ["birds"]
    (error,) = body["errors"]
    assert error["title"] == "DuplicateRule"
    assert error["value"] == {"value": "cats", "tag": "again"}
    assert body["meta"]["summary"] == {"created": 1, "not_created": 1, "valid": 1, "invalid": 1}
    values = sorted(r["value"] for r in rules.current())
    assert values == ["birds", "cats"]
    assert existing["id"] in {r["id"] for r in rules.current()}


def test_dry_run_predicts_duplicates_within_one_request(rules):
    """A dry run answers what the real request would: the same value twice in one add
    creates one rule and reports one DuplicateRule."""
    rules.reset_to()
    body = {"add": [{"value": "twice", "tag": "1"}, {"value": "twice", "tag": "2"}]}
    dry = rules.post(body, dry_run="true").json()
    real = rules.post(body).json()
    assert real["meta"]["summary"] == {"created": 1, "not_created": 1, "valid": 1, "invalid": 1}
    assert [e["title"] for e in real["errors"]] == ["DuplicateRule"]
    assert dry["meta"]["summary"] == real["meta"]["summary"]
    assert [e["title"] for e in dry["errors"]] == ["DuplicateRule"]


@pytest.mark.parametrize(
    "rule",
    [
        {"tag": "no value"},
        {"value": 5},
        {"value": ""},
        {"value": "   "},
        {"value": "x" * 1025},
        {"value": "ok", "tag": 7},
        {"value": "ok", "tag": "t" * 257},
        {"value": "ok", "colour": "red"},
        "just a string",
    ],
    ids=["no-value", "int", "empty", "blank", "too-long", "int-tag", "long-tag", "extra", "str"],
)
def test_invalid_rule_is_reported_not_created(rules, rule):
    """An invalid rule inside a well-formed body: an errors entry, summary.invalid 1, and
    nothing added."""
    before = rules.reset_to({"value": "cats", "tag": "c"})
    response = rules.post({"add": [rule]})
    assert 200 <= response.status_code < 300
    body = response.json()
    assert "data" not in body
    (error,) = body["errors"]
    assert error["title"] in {"Invalid Rule", "RuleLengthExceeded"}
    assert error["detail"]
    assert body["meta"]["summary"] == {"created": 0, "not_created": 1, "valid": 0, "invalid": 1}
    assert rules.current() == before


def test_delete_by_ids(rules):
    """POST {"delete": {"ids": [...]}}: existing ids go (summary.deleted), unknown ones are
    errors (summary.not_deleted); the others stay."""
    kept, gone = rules.reset_to({"value": "a", "tag": "A"}, {"value": "b", "tag": "B"})
    response = rules.post({"delete": {"ids": [gone["id"], "123"]}})
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["summary"] == {"deleted": 1, "not_deleted": 1}
    _sent_is_now(body["meta"])
    (error,) = body["errors"]
    assert error["id"] == "123"
    assert rules.current() == [kept]


def test_dry_run_changes_nothing(rules):
    """dry_run=true answers as if it had added / deleted, but the rules stay as they were."""
    before = rules.reset_to({"value": "a", "tag": "A"})
    added = rules.post({"add": [{"value": "b", "tag": "B"}]}, dry_run="true")
    assert 200 <= added.status_code < 300
    assert added.json()["meta"]["summary"]["created"] == 1
    assert [r["value"] for r in added.json()["data"]] == ["b"]
    deleted = rules.post({"delete": {"ids": [before[0]["id"]]}}, dry_run="true")
    assert deleted.json()["meta"]["summary"] == {"deleted": 1, "not_deleted": 0}
    wiped = rules.post(dry_run="true", delete_all="true")
    assert wiped.json()["meta"]["summary"]["deleted"] == 1
    assert rules.current() == before


def test_delete_all(rules):
    """delete_all=true removes every rule; GET then has no data and result_count 0."""
    rules.reset_to({"value": "a"}, {"value": "b"}, {"value": "c"})
    response = rules.post(delete_all="true")
    assert response.status_code == 200
    assert response.json()["meta"]["summary"] == {"deleted": 3, "not_deleted": 0}
    body = rules.get().json()
    assert "data" not in body
    assert body["meta"]["result_count"] == 0


@pytest.mark.parametrize(
    ("data", "params"),
    [
        (b"{", {}),
        (b"", {}),
        (b"\xff\xfe", {}),
        (b"[]", {}),
        (b"null", {}),
        (b"{}", {}),
        (b'{"add": []}', {}),
        (b'{"add": "cats"}', {}),
        (b'{"add": {"value": "cats"}}', {}),
        (b'{"delete": {"ids": []}}', {}),
        (b'{"delete": {"ids": [1]}}', {}),
        (b'{"delete": ["1"]}', {}),
        (b'{"delete": {}}', {}),
        (b'{"add": [{"value": "x"}], "delete": {"ids": ["1"]}}', {}),
        (b'{"remove": {"ids": ["1"]}}', {}),
        (b'{"add": [{"value": "x"}]}', {"dry_run": "yes"}),
        (b'{"add": [{"value": "x"}]}', {"delete_all": "1"}),
        (b'{"add": [{"value": "x"}]}', {"force": "true"}),
    ],
)
def test_bad_bodies_and_flags_are_400_problems(rules, data, params):
    """Malformed bodies and flags: 400 with a JSON problem, and no rule changes."""
    before = rules.reset_to({"value": "cats", "tag": "c"})
    response = rules.session.post(
        rules.url,
        data=data,
        params=params,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_problem(response, 400)
    assert rules.current() == before


def test_rules_rate_limit(start_server):
    """``--rules-limit 2``: GET and POST count together; the third request in the window
    is 429 with x-rate-limit headers (limit 2, remaining 0, reset in the future)."""
    server = start_server("--rate", "10", "--rules-limit", "2")
    client = Rules(server)
    first = client.get()
    assert first.headers["x-rate-limit-remaining"] == "1"
    second = client.post({"add": [{"value": "cats"}]})
    assert second.status_code in (200, 201)
    assert second.headers["x-rate-limit-remaining"] == "0"
    third = client.get()
    assert_problem(third, 429)
    assert third.headers["x-rate-limit-limit"] == "2"
    assert third.headers["x-rate-limit-remaining"] == "0"
    assert time.time() < int(third.headers["x-rate-limit-reset"]) <= time.time() + 15 * 60 + 2
    # The rejected request changed nothing: a rejected add does not add.
    assert client.post({"add": [{"value": "dogs"}]}).status_code == 429
    rules = server.control("GET", "ledger")["events"]
    assert [e["value"] for e in rules if e["kind"] == "rule_added"] == ["cats"]


def _tweets(response: requests.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines(chunk_size=4096, delimiter=b"\r\n"):
        if line:
            yield json.loads(line)


def test_matching_rules_follow_rule_changes(start_server):
    """Tweets carry only current rules: after rule ``a`` is deleted and ``c`` added while
    the stream runs, once ``c`` appears ``a`` never does again, and every id/tag pair is a
    rule that existed."""
    server = start_server("--rate", "500", "--seed", "9")
    client = Rules(server)
    a, b = client.reset_to({"value": "a", "tag": "A"}, {"value": "b", "tag": "B"})
    seen_before, seen_after = [], []
    c = None
    with requests.get(
        server.stream_url, headers=server.headers, stream=True, timeout=10
    ) as response:
        for n, message in enumerate(_tweets(response)):
            assert n < 10_000, "rule c never appeared in 20 s of tweets"
            (rule,) = message["matching_rules"]
            if c is None:
                seen_before.append(rule["id"])
                if n == 150:
                    assert client.post({"delete": {"ids": [a["id"]]}}).status_code == 200
                    (c,) = client.post({"add": [{"value": "c", "tag": "C"}]}).json()["data"]
            else:
                if rule["id"] == c["id"] or seen_after:
                    seen_after.append((rule["id"], rule["tag"]))
                if len(seen_after) >= 300:
                    break
    assert c is not None
    assert set(seen_before[:150]) == {a["id"], b["id"]}
    assert set(seen_after) == {(b["id"], "B"), (c["id"], "C")}


def test_no_rules_means_no_tweets_and_drops_recorded(start_server):
    """With every rule deleted the filtered stream carries no tweets (keep-alives only),
    and the ledger records the tweets created meanwhile as dropped: no_matching_rule."""
    server = start_server("--rate", "300", "--keepalive", "0.4")
    client = Rules(server)
    assert client.reset_to() == []
    lines = []
    with requests.get(
        server.stream_url, headers=server.headers, stream=True, timeout=10
    ) as response:
        assert response.status_code == 200
        started = time.monotonic()
        for line in response.iter_lines(chunk_size=1, delimiter=b"\r\n"):
            lines.append(line)
            if time.monotonic() - started > 1.5:
                break
    assert lines, "keep-alives arrive even with nothing to send"
    assert all(line == b"" for line in lines)
    # Wait until the server has seen the close, then read the ledger it flushed.
    deadline = time.monotonic() + 5
    while server.control("GET", "stats")["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    ledger = server.control("GET", "ledger")
    (conn,) = ledger["connections"]
    drops = [d for d in ledger["drops"] if d["conn_id"] == conn["conn_id"]]
    no_rule = sum(d["stop"] - d["first"] for d in drops if d["reason"] == "no_matching_rule")
    assert no_rule >= 300  # 300/s for more than 1.5 s, every one of them dropped
    assert not [d for d in ledger["deliveries"] if d["conn_id"] == conn["conn_id"]]
    # The connection's drops tile its span with no gap: nothing unaccounted for.
    spans = sorted((d["first"], d["stop"]) for d in drops)
    assert spans[0][0] == conn["start_index"]
    assert all(p[1] == q[0] for p, q in itertools.pairwise(spans))


# ---------------------------------------------------------------------------------------
# X's caps (Pro: 1,000 rules) and paging


def test_rules_cap_refuses_the_whole_request_past_1000(start_server):
    """1,000 rules fit (the start-up rule counts); a request that would make 1,001 is a 400
    ``RulesCapExceeded`` problem and adds none of its rules, dry run or not."""
    server = start_server("--rate", "10", "--rules-limit", "0")
    client = Rules(server)
    batch = [{"value": f"word{i}", "tag": f"t{i}"} for i in range(998)]
    added = client.post({"add": batch})
    assert added.status_code == 200
    assert added.json()["meta"]["summary"]["created"] == 998  # 999 with the start-up rule
    for params in ({"dry_run": "true"}, {}):
        over = client.post({"add": [{"value": "one more"}, {"value": "and another"}]}, **params)
        problem = assert_problem(over, 400)
        assert problem["title"] == "RulesCapExceeded"
        assert problem["type"] == "https://api.twitter.com/2/problems/rule-cap"
    # Invalid rules do not count: one valid rule of two still fits.
    last = client.post({"add": [{"value": "word0"}, {"value": "the last one"}]})
    assert last.json()["meta"]["summary"] == {
        "created": 1, "not_created": 1, "valid": 1, "invalid": 1,
    }  # fmt: skip
    assert client.get().json()["meta"]["result_count"] == 1000
    events = server.control("GET", "ledger")["events"]
    assert sum(e["kind"] == "rule_added" for e in events) == 999  # the start-up one is not


def test_max_results_pages_through_every_rule_once(start_server):
    """GET honours ``max_results`` and hands out ``meta.next_token`` for the next page, as
    X does; following the tokens lists every rule exactly once, in id order."""
    server = start_server("--rate", "10", "--rules-limit", "0")
    client = Rules(server)
    client.post({"add": [{"value": f"v{i}"} for i in range(24)]})  # 25 with the start-up one
    seen, token, pages = [], None, 0
    while True:
        params = {"max_results": "10"} | ({"pagination_token": token} if token else {})
        body = client.get(**params).json()
        pages += 1
        seen += [r["id"] for r in body["data"]]
        assert body["meta"]["result_count"] == len(body["data"])
        token = body["meta"].get("next_token")
        if token is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25
    assert seen == sorted(seen, key=int)
    whole = client.get().json()
    assert [r["id"] for r in whole["data"]] == seen
    assert "next_token" not in whole["meta"]


@pytest.mark.parametrize("token", ["abc", "-1", "1" * 20, "\uff11"])  # a full-width 1
def test_bad_pagination_token_is_400(rules, token):
    problem = assert_problem(rules.get(pagination_token=token), 400)
    assert problem["errors"][0]["parameters"] == {"pagination_token": [token]}
