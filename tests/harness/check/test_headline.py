"""harness/check/headline.py and hypothesis.py: one definition of each headline metric,
read from a metrics.json the real checker wrote; the hypothesis judged from scenario.json
whenever a run is checked, by the runner or by ``python -m harness check``."""

from __future__ import annotations

import json

import pytest

from harness.__main__ import main
from harness.check.headline import COLUMNS, METRICS, fmt, row
from harness.check.hypothesis import Hypothesis
from tests.report._results import PLANS, write_scenario


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """naive_loop killed at 2 s and relaunched at 3 s: a run with loss and a fault."""
    plan = next(p for p in PLANS if p.name == "naive_loop-kill_task")
    out = tmp_path_factory.mktemp("run")
    write_scenario(out, plan, t0=1_700_000_000.0)
    return out / plan.name


def test_every_headline_metric_is_where_metrics_json_has_it(killed):
    metrics = json.loads((killed / "metrics.json").read_text())
    for metric in METRICS:
        assert metric.value(metrics) is not None, metric.name
    assert row("x", {}, metrics)["lost"] == metrics["queue"]["lost"] > 0


def test_a_hypothesis_reads_the_same_value_the_tables_show(killed):
    metrics = json.loads((killed / "metrics.json").read_text())
    headline = row(killed.name, json.loads((killed / "scenario.json").read_text()), metrics)
    for metric in METRICS:
        if metric.column and metric.name != "hypothesis_held":
            value = "true" if metric.kind == "flag" else "0"  # a value of the metric's kind
            _, measured = Hypothesis(text=f"{metric.name} == {value}").judge(metrics)
            assert measured == f"{metric.name} = {headline[metric.name]!r}"
    assert [key for key, _, _ in COLUMNS][:3] == ["scenario", "variant", "fault"]
    assert headline["fault"] == "kill_task"
    assert fmt(headline, "lost") == f"{metrics['queue']['lost']:,}"


def test_the_loss_by_cause_adds_up_to_the_loss(killed, capsys):
    """Each lost tweet under one cause (the server's drop reason for those it never sent),
    in the summary's column and in ``check``'s output."""
    metrics = json.loads((killed / "metrics.json").read_text())
    causes = row(killed.name, {}, metrics)["lost_by_cause"]
    assert sum(causes.values()) == metrics["queue"]["lost"] > 0
    assert list(causes.values()) == sorted(causes.values(), reverse=True)
    assert "no connection open" in causes  # the kill: nothing connected until the retry
    shown = fmt({"lost_by_cause": causes}, "lost_by_cause")
    assert shown == "; ".join(f"{cause} {n:,}" for cause, n in causes.items())
    assert ("lost_by_cause", "lost by cause", False) in COLUMNS
    main(["check", str(killed)])
    assert f"lost by cause: {shown}\n" in capsys.readouterr().out


def test_checking_a_run_again_judges_its_hypothesis_again(killed):
    """``harness check`` rewrites metrics.json; the scenario's hypothesis stays judged."""
    before = json.loads((killed / "metrics.json").read_text())["hypothesis"]
    (killed / "metrics.json").unlink()
    assert main(["check", str(killed)]) == 1  # 1: a hypothesis failed
    after = json.loads((killed / "metrics.json").read_text())["hypothesis"]
    assert after["results"] == before["results"]
    assert [r["hypothesis"] for r in after["results"]] == [
        "lost == 0", "duplicates == 0", "p99_latency_s < 2"
    ]  # fmt: skip
    assert after["results"][0]["held"] is False  # the kill lost tweets
