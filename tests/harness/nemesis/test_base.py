"""harness/nemesis/base.py: triggers and the registry."""

from __future__ import annotations

import time
from typing import Literal

import pytest

from harness.nemesis import AirflowFault, register, registered
from harness.nemesis.signals import KillTask
from tests.harness.nemesis._fake_task import FakeProgress


def test_at_counts_from_the_first_commit_or_the_stream_start():
    progress = FakeProgress()
    after_commit = KillTask(at=2)
    after_start = KillTask.model_validate({"at": 2, "from": "stream_start"})
    assert not after_commit.due(progress)  # no commit yet
    progress.first = time.time() - 1.0
    assert not after_commit.due(progress)
    progress.first = time.time() - 2.5
    assert after_commit.due(progress)
    progress.started_at = time.time() - 1.0
    assert not after_start.due(progress)
    progress.started_at = time.time() - 2.5
    assert after_start.due(progress)


def test_after_commits_counts_committed_tweets():
    progress = FakeProgress()
    fault = KillTask(after_commits=500)
    progress.count = 499
    assert not fault.due(progress)
    progress.count = 500
    assert fault.due(progress)


def test_a_type_registered_twice_is_refused_and_the_first_kept():
    class Again(AirflowFault):
        type: Literal["kill_task"] = "kill_task"

        def inject(self, ctx):
            pass

    with pytest.raises(ValueError, match="registered twice"):
        register(Again)
    assert registered()["kill_task"] is KillTask


def test_a_fault_without_a_literal_type_is_refused():
    class Nameless(AirflowFault):
        def inject(self, ctx):
            pass

    with pytest.raises(TypeError, match="declare type"):
        register(Nameless)
