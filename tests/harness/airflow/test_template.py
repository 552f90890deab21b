"""harness/airflow/home.py's migrated_template: migrated once per Airflow install, then a
copy of the cached database (what a warm start saves: ``airflow db migrate``)."""

from __future__ import annotations

import sqlite3

import pytest

from harness.airflow.home import AirflowHome, airflow_version, migrated_template


@pytest.mark.slow
def test_the_first_call_migrates_and_caches_the_next_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSTALL_CACHE", str(tmp_path / "cache"))
    first = migrated_template(tmp_path / "one")
    assert first.parent == tmp_path / "cache"
    assert first.name.startswith(f"airflow-{airflow_version()}-")
    assert (tmp_path / "one" / "airflow.db").exists()  # migrated there, then cached
    second = migrated_template(tmp_path / "two")
    assert second == first
    assert not (tmp_path / "two").exists()  # nothing migrated the second time
    db = sqlite3.connect(second)
    (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    db.close()
    assert version
    home = AirflowHome(tmp_path / "home", second)  # a home copies it and runs on it
    assert home.task_instances("none") == []
