"""The hypothesis language's vocabulary is what the checker writes: a metric it does not
know is refused when the scenario loads, not found "not measured" after the run."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from harness.check.headline import METRICS
from harness.check.hypothesis import FIELDS, Hypothesis
from harness.run.ending import Ending
from tests.report._results import PLANS, write_scenario


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    """A metrics.json the real checker wrote (a killed and relaunched run)."""
    plan = next(p for p in PLANS if p.name == "naive_loop-kill_task")
    return write_scenario(tmp_path_factory.mktemp("run"), plan, t0=1_700_000_000.0)


def test_fields_are_the_ones_metrics_json_has(metrics):
    assert set(FIELDS) == set(metrics)
    for top, fields in FIELDS.items():
        if top == "ending":  # as the runner writes it (the fixture writes two of them)
            assert fields == {f.name for f in dataclasses.fields(Ending)}
        elif fields is not None:
            assert fields == set(metrics[top]), top
        else:
            assert not isinstance(metrics[top], dict) or top == "hypothesis", top


def test_every_headline_metric_lives_under_a_known_field():
    for metric in METRICS:
        if metric.read is None:
            top, _, rest = metric.path.partition(".")
            assert top in FIELDS, metric
            assert not rest or rest.split(".")[0] in (FIELDS[top] or ()), metric


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("lsot == 0", "unknown metric 'lsot'"),
        ("queue.lsot == 0", "queue has no 'lsot'"),
        ("timing.latency.p99 < inf", "'inf' is not a finite number"),
        ("lost < nan", "'nan' is not a finite number"),
        ("throughput > fast", "throughput is a number; 'fast' is not one"),
        ("silent_failure == no", "silent_failure is true, false or unknown"),
    ],
)
def test_a_statement_about_no_metric_or_of_the_wrong_kind_is_refused(text, problem):
    with pytest.raises(ValidationError, match=problem):
        Hypothesis(text=text)


def test_statements_the_scenarios_use_are_accepted_and_judged(metrics):
    for text, held in [
        ("lost == 0", False),
        ("verdict == at-most-once", True),
        ("silent_failure == unknown", False),
        ("queue.lost_by_cause.never_delivered > 0", True),
        ("timing.latency.p99 < 100", True),
    ]:
        assert Hypothesis(text=text).judge(metrics)[0] is held, text
