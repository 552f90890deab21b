"""A PostgreSQL server of our own (harness/airflow/postgres.py): a real server on loopback,
asked through ``psql``, stopped by pid with nothing left, its folder ours again."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.airflow.postgres import PostgresError, PostgresServer, bin_dir
from harness.procs import pid_alive, session_members

pytestmark = pytest.mark.skipif(
    bin_dir() is None, reason="no PostgreSQL server (apt-get install postgresql; .ci/run does)"
)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder the ``postgres`` user can enter (pytest's own are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="streamstall-pg-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_server_answers_copies_a_database_and_leaves_nothing(folder):
    server = PostgresServer(folder / "pg")
    try:
        assert server.sql("select 40 + 2") == "42"
        server.create_database("airflow")
        server.sql("create table t(x int); insert into t values (7)", database="airflow")
        server.create_database("scenario_1", template="airflow")  # a migrated one, copied
        assert server.sql("select x from t", database="scenario_1") == "7"
        assert server.url("scenario_1").endswith(f"127.0.0.1:{server.port}/scenario_1")
        pid = server.process.pid
    finally:
        server.stop()
    assert not pid_alive(pid)
    assert session_members(pid) == []
    with socket.socket() as s:  # nobody listens on its port again
        # (SO_REUSEADDR: its closed connections may still hold the port in TIME_WAIT;
        # Linux still refuses the bind while a socket listens on it.)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))
        s.listen()
    owners = {p.stat().st_uid for p in (server.data, *server.data.rglob("*"))}
    assert owners == {os.getuid()}


def test_a_folder_the_server_cannot_enter_is_refused_by_name(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("as root only: the server then runs as the postgres user")
    with pytest.raises(PostgresError, match="cannot enter it"):
        PostgresServer(tmp_path / "pg")


def test_a_bad_database_name_is_refused(folder):
    server = PostgresServer(folder / "pg")
    try:
        with pytest.raises(PostgresError, match="not a database name"):
            server.create_database("x; drop database postgres")
    finally:
        server.stop()
