"""The partition forwarder with a real HTTP server behind it: bytes flow, are held during
a partition (not dropped), and arrive in order after the heal."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from harness.airflow.partition_proxy import PartitionProxy


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    forwarder = PartitionProxy(server.server_address[1])
    yield forwarder
    forwarder.close()
    server.shutdown()
    server.server_close()


def _answer(sock: socket.socket) -> bytes:
    """One whole response (the server writes headers and body apart)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
        data.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]
    ):
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    return data


def _get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return _answer(sock)


def test_forwards_holds_during_a_partition_and_delivers_after_the_heal(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        assert _get(sock, "/before").endswith(b"/before")
        proxy.partition()
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing comes back while cut off
            _get(sock, "/during")
        assert proxy.partitioned
        time.sleep(0.2)
        proxy.heal()
        sock.settimeout(5)
        answer = _answer(sock)  # the held request went through after the heal
        assert answer.endswith(b"/during")
        assert _get(sock, "/after").endswith(b"/after")
    (start, end) = proxy.partitions[0]
    assert end is not None
    assert end - start >= 0.7


def test_a_connection_made_during_a_partition_waits_for_the_heal(proxy):
    proxy.partition()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
    with sock:
        with pytest.raises(TimeoutError):
            _get(sock, "/new")
        proxy.heal()
        sock.settimeout(5)
        assert _answer(sock).endswith(b"/new")
