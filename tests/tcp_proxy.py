"""A loopback TCP proxy that makes network faults between a client and a server on command.

Runs on the test's own event loop (the asyncio registry under test shares it; its file I/O
runs in threads, so the loop stays free)::

    async with TcpProxy(server.host, server.port) as proxy:
        url = proxy.url()                        # redis://127.0.0.1:<proxy port>/0
        proxy.set_latency(down=0.6)              # server -> client bytes arrive 0.6 s late
        proxy.blackhole()                        # half-open: bytes accepted, never forwarded
        proxy.reset_all()                        # RST every client connection (SO_LINGER 0)
        proxy.reset_when(b"EVALSHA", forward=True)  # one-shot: RST right after that chunk
        proxy.delay_when(b"SUBSCRIBE", 1.0)      # hold that command (and what follows) 1 s
        proxy.resume()                           # latency gone, new connections forwarded

Faults, and what a client sees:

* **Latency** (per direction): each chunk is delivered ``latency`` seconds after it was read,
  in order (a pipe with delay, not a throttle). In-flight bytes still arrive when the sender
  closes, as on a real network.
* **Black hole**: every connection open at that moment, and every connection accepted while
  black-holed, is *dead*: the proxy keeps reading its bytes and discards them, answers
  nothing, and never closes it (a peer that vanished, or a NAT entry that expired). Only a
  client-side timeout or keep-alive can notice. :meth:`resume` forwards *new* connections
  again; dead ones stay dead, as they would on a real network.
* **Reset**: the client side is closed with ``SO_LINGER`` 0 (the client reads
  ``ECONNRESET``), the server side is closed; bytes queued in either direction are dropped.
  :meth:`reset_when` resets on the first client->server chunk holding a byte pattern, after
  forwarding it (``forward=True``: the server runs the command, its reply is lost) or
  instead of forwarding it (the server never sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's and the server's streams."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    dead: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class _ResetRule:
    patterns: tuple[bytes, ...]
    forward: bool
    fired: asyncio.Event = field(default_factory=asyncio.Event)


class TcpProxy:
    """See the module docstring. ``seen(pattern)`` waits for client bytes holding a pattern."""

    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.latency = {"up": 0.0, "down": 0.0}
        self.blackholed = False
        self.accepted = 0
        self.resets = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._rule: _ResetRule | None = None
        self._watches: list[tuple[bytes, asyncio.Event]] = []
        self._delays: dict[bytes, float] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._drop(link, rst=False)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def url(self, db: int = 0, credentials: str = "") -> str:
        at = f"{credentials}@" if credentials else ""
        return f"redis://{at}{self.host}:{self.port}/{db}"

    # -- faults ----------------------------------------------------------------------------
    def set_latency(self, up: float = 0.0, down: float = 0.0) -> None:
        """Delay client->server (``up``) and server->client (``down``) bytes, in seconds."""
        self.latency = {"up": up, "down": down}

    def blackhole(self) -> None:
        """Make every open connection, and every new one until :meth:`resume`, dead."""
        self.blackholed = True
        for link in self._links:
            link.dead = True

    def resume(self) -> None:
        """No latency, no black hole: new connections are forwarded (dead ones stay dead)."""
        self.blackholed = False
        self.latency = {"up": 0.0, "down": 0.0}
        self._delays.clear()

    def reset_all(self) -> int:
        """RST every client connection now; returns how many there were."""
        links = list(self._links)
        for link in links:
            self._drop(link, rst=True)
        self.resets += len(links)
        return len(links)

    def reset_when(self, *patterns: bytes, forward: bool) -> asyncio.Event:
        """One-shot: on the next client->server chunk holding every one of ``patterns``,
        forward it (or not) and reset every connection. The event is set once it fired."""
        self._rule = _ResetRule(patterns, forward)
        return self._rule.fired

    def delay_when(self, pattern: bytes, seconds: float) -> None:
        """Hold every client->server chunk holding ``pattern`` (and, to keep the order,
        whatever follows it on its connection) ``seconds`` longer, until :meth:`resume`."""
        self._delays[pattern] = seconds

    def seen(self, pattern: bytes) -> asyncio.Event:
        """An event set when a client->server chunk holding ``pattern`` next passes."""
        event = asyncio.Event()
        self._watches.append((pattern, event))
        return event

    @property
    def connections(self) -> int:
        return len(self._links)

    # -- plumbing --------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer, dead=self.blackholed)
        self._links.add(link)
        if link.dead:
            link.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._drop(link, rst=True)
            return
        link.server = up_writer
        link.tasks = [
            asyncio.ensure_future(self._pump(link, reader, up_writer, "up")),
            asyncio.ensure_future(self._pump(link, up_reader, writer, "down")),
        ]

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(CHUNK):
                pass

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
    ) -> None:
        """Copy ``reader`` to ``writer`` through a delay queue (order kept)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.ensure_future(self._deliver(link, queue, writer))
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    break
                if link.dead:
                    continue  # half-open: accepted, never forwarded
                if direction == "up":
                    self._notice(data)
                    rule = self._rule
                    if rule is not None and all(p in data for p in rule.patterns):
                        self._rule = None
                        if rule.forward and link.server is not None:
                            link.server.write(data)  # the server runs it; the reply is lost
                            with contextlib.suppress(OSError):
                                await link.server.drain()
                        rule.fired.set()
                        self.resets += len(self._links)
                        for other in list(self._links):
                            self._drop(other, rst=True)
                        return
                due = time.monotonic() + self.latency[direction]
                if direction == "up":
                    due += max((s for p, s in self._delays.items() if p in data), default=0.0)
                queue.put_nowait((due, data))
            queue.put_nowait((0.0, b""))  # EOF after whatever is in flight
            await sender
        finally:
            sender.cancel()

    async def _deliver(
        self, link: _Link, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                self._drop(link, rst=False)
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if link.dead:
                continue
            try:
                writer.write(data)
                await writer.drain()
            except OSError:
                self._drop(link, rst=True)
                return

    def _notice(self, data: bytes) -> None:
        for watch in list(self._watches):
            if watch[0] in data:
                watch[1].set()
                self._watches.remove(watch)

    def _drop(self, link: _Link, *, rst: bool) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
        for writer, hard in ((link.client, rst), (link.server, False)):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if hard and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if hard:
                writer.transport.abort()
            else:
                writer.close()
