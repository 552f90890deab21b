"""Running a fake stream server: bind, announce, generate, serve, and stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import signal
import socket
from typing import Any

from aiohttp import web

from fake_stream.app import ConnectionGate, ProblemRequestHandler, create_app
from fake_stream.config import ServerConfig
from fake_stream.faults import EndConnection, ListenerFault
from fake_stream.state import StreamState

__all__ = ["FakeStreamServer"]

_LISTENER_POLL = 0.05


class FakeStreamServer:
    """One fake X stream on a loopback port, with its ledger.

    Use :meth:`start` / :meth:`stop` from a running event loop, or :meth:`run_until_signal`
    for the command line.
    """

    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.state: StreamState | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Two descriptors per stream (ours and the Wire's duplicate); keep room for the
        # ledger, the listener and the interpreter's own.
        total = max(16, (soft - 64) // 2) if soft != resource.RLIM_INFINITY else 100_000
        self.gate = ConnectionGate(config.max_connections, total)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def announcement(self) -> dict[str, Any]:
        """What the CLI prints once the server accepts connections."""
        assert self.state is not None
        return {
            "url": self.url,
            "stream_url": self.url + "/2/tweets/search/stream",
            "bearer_token": self.config.tokens[0],
            "tokens": list(self.config.tokens),
            "ledger": str(self.config.ledger),
            "seed": self.config.seed,
            "t0_ms": self.state.clock.t0_ms,
        }

    async def start(self) -> None:
        """Bind (a taken port fails here, before the ledger exists), then serve."""
        sock = self._bind()
        try:
            self.state = StreamState(self.config)
            self._runner = web.AppRunner(create_app(self.state), access_log=None)
            await self._runner.setup()
            await self._listen(sock)
        except BaseException:
            sock.close()
            raise
        self.state.generate()
        self._tasks = [
            asyncio.create_task(self.state.run_generator()),
            asyncio.create_task(self.state.run_flusher()),
            asyncio.create_task(self._watch_listener_faults()),
        ]

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return sock

    async def _listen(self, sock: socket.socket | None = None) -> None:
        assert self._runner is not None
        assert self._runner.server is not None
        server = self._runner.server
        loop = asyncio.get_running_loop()
        # request_timeout bounds each wait on a client: for a request's head (aiohttp's
        # keep-alive timer runs from the connect), and for the rest of a body the server
        # did not want (its lingering close); json_body bounds the body it reads.
        timeout = self.config.request_timeout
        self._listener = await loop.create_server(
            lambda: ProblemRequestHandler(
                server,
                loop=loop,
                access_log=None,
                keepalive_timeout=timeout,
                lingering_time=timeout,
                gate=self.gate,
            ),
            sock=sock or self._bind(),
            backlog=128,
        )

    async def _watch_listener_faults(self) -> None:
        """Apply ``down``: close the listener while such a fault is active, reopen after."""
        state = self.state
        assert state is not None
        while True:
            await asyncio.sleep(_LISTENER_POLL)
            now = state.clock.stream_time()
            down = None
            for spec in state.faults.values():
                window = spec.schedule.activation(now)
                if isinstance(spec.fault, ListenerFault) and window is not None:
                    coin = random.Random(f"{state.config.seed}:{spec.name}:{window}").random()
                    if coin < spec.probability:
                        down = spec
            if down is not None and self._listener is not None:
                self._listener.close()
                self._listener = None
                state.ledger.event("fault", down.name, type=down.type, effect="listener_closed")
                if getattr(down.fault, "close_connections", False):
                    for session in list(state.sessions.values()):
                        session.end(EndConnection(f"fault:{down.name}", "reset"))
            elif down is None and self._listener is None:
                await self._listen()
                state.ledger.event("fault", None, effect="listener_reopened")

    async def stop(self) -> None:
        """End every stream (final chunk), settle what the clients acknowledged, write the
        final ledger flush. Idempotent."""
        state = self.state
        if state is None:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        state.generate()
        sessions = list(state.sessions.values())
        for session in sessions:
            session.end(EndConnection("server_shutdown", "clean"))
        deadline = 2 * self.config.settle_timeout + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.closed.wait() for s in sessions)), deadline)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        state.ledger.close()
        self.state = None

    async def run_until_signal(self, announce: Any = None) -> None:
        """Start, call ``announce(info)``, serve until SIGINT/SIGTERM, then stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            if announce is not None:
                announce(self.announcement())
            await stop.wait()
        finally:
            await self.stop()
