"""Scenario and matrix files: valid ones load and expand; invalid ones are refused before
anything starts, naming the file, the field path and what is wrong (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import cgroups
from harness.__main__ import main
from harness.nemesis import registered
from harness.scenario import ScenarioError, load, load_many, quick_pattern

REPO = Path(__file__).resolve().parents[2]
VALID = """
name = "naive-kill"
variant = "naive_loop"
seed = 7
duration = 10
rate = {kind = "poisson", rate = 500}
params = {cpu_us = 20}
task = {retries = 1}
stream_faults = [{type = "latency", attributes = {latency = 0.1}}]
hypothesis = ["lost == 0", "p99_latency_s < 2"]

[[airflow_faults]]
type = "kill_task"
at = 3

[[airflow_faults]]
type = "pause_task"
after_commits = 500
duration = 1.5
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_a_valid_scenario_loads(tmp_path):
    (scenario,) = load(_write(tmp_path, VALID))
    assert scenario.variant == "naive_loop"
    assert [f.type for f in scenario.airflow_faults] == ["kill_task", "pause_task"]
    assert scenario.airflow_faults[0].from_ == "first_commit"
    assert scenario.airflow_faults[1].after_commits == 500
    assert [h.text for h in scenario.hypothesis] == ["lost == 0", "p99_latency_s < 2"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("at = 3", 'at = "soon"'), "airflow_faults[0].at: Input should be a valid number"),
        (
            ("at = 3", "at = -1"),
            "airflow_faults[0].at: Input should be greater than or equal to 0, got -1",
        ),
        (
            ('type = "kill_task"', 'type = "explode"'),
            "airflow_faults[0].type: unknown Airflow fault type 'explode'; known: ",
        ),
        (('variant = "naive_loop"', 'variant = "nope"'), "variant: Value error, unknown variant"),
        (("seed = 7", "seed = 7\nsurprise = 1"), "surprise: Extra inputs are not permitted"),
        (
            ("latency = 0.1", 'latency = "slow"'),
            "stream_faults: Value error, [0].attributes.latency",
        ),
        (("rate = {kind", "rate = {kond"), "rate: Value error, rate profile kind"),
        (("cpu_us = 20", "cpu = 20"), "params: Value error, unknown param 'cpu'"),
        (('"lost == 0"', '"lost is zero"'), "hypothesis[0].text: Value error, expected"),
        (
            ("at = 3", "at = 3\nafter_commits = 5"),
            "airflow_faults[0]: Value error, give exactly one",
        ),
        (("seed = 7", 'seed = 7\nmode = "nope"'), "mode: Value error, unknown mode; known: "),
        # What a mode can do is declared; a fault needing more is refused, naming the modes
        # that can run it.
        (
            ('type = "kill_task"', 'type = "kill_worker"'),
            "airflow_faults: Value error, [0]: kill_worker needs supervisor, which mode "
            "'dagtest' does not have (modes that do: celery, localtask, standalone)",
        ),
        (("[[airflow_faults]]", "[[faults]]"), "faults: now called airflow_faults"),
    ],
)
def test_invalid_fields_are_named(tmp_path, change, message):
    path = _write(tmp_path, VALID.replace(*change, 1))
    with pytest.raises(ScenarioError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


TRY_STATE = {"clear_task", "mark_failed", "mark_success"}
#: The faults only a deployment of several workers has (the celery mode's).
DISTRIBUTED = {
    "kill_celery_worker", "worker_warm_shutdown", "restart_broker", "restart_database",
    "network_partition_worker",
}  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "refused"),
    [
        (
            "dagtest",
            {
                "kill_worker",
                "restart_scheduler",
                "restart_triggerer",
                "worker_shutdown",
                *TRY_STATE,
                *DISTRIBUTED,
            },
        ),
        ("localtask", {"restart_scheduler", "restart_triggerer", *DISTRIBUTED}),
        ("standalone", DISTRIBUTED),
        ("celery", set()),
        # Your own Airflow, through its REST API: only what an operator does in the UI.
        ("external", set(registered()) - TRY_STATE),
    ],
)
def test_each_mode_refuses_the_faults_it_cannot_deliver(tmp_path, mode, refused):
    """Which faults load in which mode follows from what the modes and faults declare."""
    refusals = {}
    for fault in sorted(registered()):
        path = _write(tmp_path, f'name = "x"\nvariant = "naive_loop"\nmode = "{mode}"\n'
                      f'airflow_faults = [{{type = "{fault}", at = 1}}]\n')  # fmt: skip
        try:
            load(path)
        except ScenarioError as e:
            refusals[fault] = str(e)
    no_cgroup = {"oom_kill"} if cgroups.unavailable() else set()  # refused on any mode
    assert set(refusals) == refused | no_cgroup
    for fault, message in refusals.items():
        why = "cannot run on this machine" if fault in no_cgroup - refused else "needs "
        assert f"airflow_faults: Value error, [0]: {fault} {why}" in message


def test_cli_exits_2_before_starting_anything(tmp_path, capsys):
    path = _write(tmp_path, VALID.replace("at = 3", 'at = "soon"'))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert f"{path}: airflow_faults[0].at" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_not_toml_is_an_error(tmp_path):
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(_write(tmp_path, "name = [unclosed"))


_VALUES = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet="abcxyz 019", max_size=5),
)
_FIELDS = st.sampled_from(["at", "duration", "times", "after_commits", "from"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_FIELDS, _VALUES, max_size=3))
def test_random_fault_tables_load_or_fail_clearly(tmp_path_factory, fields):
    """Any fault table either loads or is refused with a message naming airflow_faults[0]."""
    import json

    table = "".join(f", {k} = {json.dumps(v)}" for k, v in fields.items())
    text = f'name = "x"\nvariant = "naive_loop"\nairflow_faults = [{{type = "kill_task"{table}}}]\n'
    path = tmp_path_factory.mktemp("h") / "x.toml"
    path.write_text(text)
    message = ""
    try:
        load(path)
    except ScenarioError as e:
        message = str(e)
    assert message == "" or message.startswith(f"{path}: airflow_faults[0]")


def test_the_default_matrix_expands_every_variant_and_fault_set():
    path = REPO / "scenarios" / "default.toml"
    scenarios = load_many([path])
    variants = {s.variant for s in scenarios}
    assert {
        "naive_loop",
        "checkpoint",
        "timeout_handling",
        "multiprocess",
        "threaded",
        "exactly_once",
    } <= variants
    names = {s.name for s in scenarios}
    for fault_set in ("none", "kill_task", "clear_task", "timeout", "move_worker", "slow_consumer"):
        assert f"exactly_once-{fault_set}" in names
    quick = load_many([path], quick_pattern([path]))
    assert 0 < len(quick) < len(scenarios)


def test_task_settings_are_refused_where_the_harness_does_not_write_the_dag(tmp_path):
    """On your own Airflow the DAG is parsed as you deployed it: a scenario's ``[task]``
    would silently not apply, so it is refused, naming the settings."""
    body = 'name = "x"\nvariant = "naive_loop"\nmode = "external"\n'
    assert [s.mode for s in load(_write(tmp_path, body))] == ["external"]
    path = _write(tmp_path, body + "task = {retries = 0, execution_timeout = 5}\n")
    with pytest.raises(ScenarioError) as error:
        load(path)
    assert "task: Value error, mode 'external' runs the DAG as it is deployed: set " in str(
        error.value
    )
    assert "execution_timeout, retries in the DAG there" in str(error.value)


def test_the_external_matrix_loads_without_an_airflow_to_run_it():
    """Loading needs no environment: where your Airflow is, is asked when it runs."""
    external = load_many([REPO / "scenarios" / "external.toml"])
    assert {s.mode for s in external} == {"external"}
    assert all(s.name.startswith("external-") for s in external)
    assert {f.type for s in external for f in s.airflow_faults} == TRY_STATE


def test_the_celery_matrix_has_names_of_its_own_beside_the_default_one():
    """Every variant under every distributed fault, on the celery mode, loads beside the
    default matrix (its prefix keeps the names apart)."""
    celery = load_many([REPO / "scenarios" / "celery.toml"])
    default = load_many([REPO / "scenarios" / "default.toml"])
    assert {s.mode for s in celery} == {"celery"}
    assert {s.variant for s in celery} == {s.variant for s in default}
    assert all(s.name.startswith("celery-") for s in celery)
    assert load_many([REPO / "scenarios" / "celery.toml", REPO / "scenarios" / "default.toml"])
    faults = {f.type for s in celery for f in s.airflow_faults}
    assert faults == {
        "kill_celery_worker", "worker_warm_shutdown", "restart_broker", "restart_database",
        "network_partition_worker", "move_worker",
    }  # fmt: skip


def test_a_matrix_prefix_is_checked(tmp_path):
    body = '[matrix]\nprefix = "a/b-"\nvariants = ["naive_loop"]\n[base]\n[fault_sets.none]\n'
    with pytest.raises(ScenarioError, match=r"matrix\.prefix"):
        load(_write(tmp_path, body))


@pytest.mark.parametrize("variant", ["scheduled_poll", "event_driven"])
def test_a_variant_airflow_schedules_needs_a_mode_with_a_scheduler(tmp_path, variant):
    path = _write(tmp_path, f'name = "x"\nvariant = "{variant}"\nmode = "dagtest"\n')
    with pytest.raises(
        ScenarioError, match="started by Airflow's scheduler: mode 'celery' or 'standalone'"
    ):
        load(path)
    load(_write(tmp_path, f'name = "x"\nvariant = "{variant}"\nmode = "standalone"\n'))
