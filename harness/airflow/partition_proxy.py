"""A TCP forwarder on loopback that can cut one worker off the API server and heal it.

This machine has no ``iptables`` and every worker shares one network namespace, so a
worker's partition is made where its traffic goes: the worker's
``execution_api_server_url`` points at its own forwarder. A partition stops the
forwarder reading from either side: bytes wait in the kernel's buffers, new connections
are accepted by the kernel and then get nothing, as when packets are dropped and TCP keeps
retransmitting. On :meth:`heal` everything held flows again, in order: what a healed
network delivers. Nothing is dropped or reset by us.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from harness.procs import free_port

__all__ = ["PartitionProxy"]

_CHUNK = 65536


class PartitionProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_port`` until :meth:`close`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        #: ``(start, end)`` UNIX times of each partition (end None while it lasts).
        self.partitions: list[tuple[float, float | None]] = []
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    @property
    def partitioned(self) -> bool:
        return not self._flowing.is_set()

    def partition(self) -> float:
        """Stop forwarding, both ways; when (UNIX time)."""
        self._flowing.clear()
        self.partitions.append((time.time(), None))
        return self.partitions[-1][0]

    def heal(self) -> float:
        """Forward again, held bytes first; when (UNIX time)."""
        healed = time.time()
        if self.partitions and self.partitions[-1][1] is None:
            self.partitions[-1] = (self.partitions[-1][0], healed)
        self._flowing.set()
        return healed

    def close(self) -> None:
        self._closed = True
        self._flowing.set()  # release held pumps so they see the close
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()  # a connection made during a partition waits for the heal
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets |= {client, upstream}
        pumps = [2]  # both directions done: both sockets closed
        for source, sink in ((client, upstream), (upstream, client)):
            args = (source, sink, pumps)
            threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pumps: list[int]) -> None:
        try:
            while True:
                self._flowing.wait()
                data = source.recv(_CHUNK)
                self._flowing.wait()  # read just before the partition: held, not sent
                if not data or self._closed:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with self._lock:
                pumps[0] -= 1
                done = pumps[0] == 0
                if done:
                    self._sockets -= {source, sink}
            if done:
                for sock in (source, sink):
                    sock.close()
