"""The fake stream as a run starts it: a random token per server, in a file only we can
read, never on a command line (``ps`` shows those to every local user)."""

from __future__ import annotations

import stat
from pathlib import Path

import requests

from harness.run.services import StreamServerProcess


def test_each_server_gets_its_own_token_kept_off_the_command_line(tmp_path: Path):
    servers = [StreamServerProcess(tmp_path / f"ledger-{i}.sqlite") for i in range(2)]
    try:
        first, second = servers
        assert first.token != second.token
        for server in servers:
            cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
            assert server.token.encode() not in cmdline
            assert stat.S_IMODE(server.token_file.stat().st_mode) == 0o600
            rules = f"{server.url}/2/tweets/search/stream/rules"
            assert requests.get(rules, headers=server.headers, timeout=10).status_code == 200
        # one server's token is no key to the other
        rules = f"{second.url}/2/tweets/search/stream/rules"
        assert requests.get(rules, headers=first.headers, timeout=10).status_code == 401
    finally:
        for server in servers:
            server.stop()
