"""The connections of the agents' API, up to the first byte of HTTP: listening
sockets, a bound on how many connections are open, the TLS handshake on a
deadline and the first request head on a deadline. The HTTP on them is
aiohttp's (agent/remote.py says why aiohttp).

asyncio's ``create_server(ssl=...)`` creates the application's protocol when
it accepts a connection but says nothing when that connection's handshake
fails or times out, so connections cannot be counted through it. The accept
loop here takes each socket itself (``loop.sock_accept``), refuses it at once
when ``Limits.connections`` are open (an attacker's connections never wait in
the kernel's backlog in front of a host's), and hands it to
``loop.connect_accepted_socket(ssl=..., ssl_handshake_timeout=...)``; the
connection counts until its transport is gone, handshake or not.

After the handshake, aiohttp closes a connection that stays idle between
requests (its keep-alive timeout) but not, in 3.12 (3.14.5 does), one that
never sends a first request; ``_Watched`` closes a connection whose first request head
(up to the empty line, RFC 9112 section 2.1) has not arrived ``Limits.header``
seconds after the handshake. After that, a request whose body stalls is the
handler's business (agent/remote.py), and only a host gets that far.

Listening on ``::`` serves IPv4 too (IPv4-mapped): IPV6_V6ONLY is cleared on
that socket, whatever the system default is (FreeBSD's net.inet6.ip6.v6only
is 1, Linux's net.ipv6.bindv6only 0; ip6(4), ipv6(7)); on any other IPv6
address it is set, so that a second socket can take the IPv4 address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rexcarcer.cluster import AgentApiError

log = logging.getLogger("rexcarcer.agent")

BACKLOG = 128
HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    handshake: float = 10.0  # s from accept to a finished TLS handshake
    header: float = 15.0  # s to the first request head; also the keep-alive idle time
    connections: int = 1000  # open at once, handshaking ones included
    body_stall: float = 30.0  # s a request body may pause
    write_stall: float = 60.0  # s a client may leave an exec stream unread
    auth_threads: int = 4  # store reads of the authorisation
    work_threads: int = 8  # jail verbs (up, exec, ...) in process
    uploads: int = 2  # build contexts (up to 1 GiB each) read at once


class _Watched(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the first-request deadline;
    ``gone`` is set when the connection is."""

    def __init__(self, inner: asyncio.Protocol, gone: asyncio.Future[None], header: float) -> None:
        self.inner = inner
        self.gone = gone
        self.header = header
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""  # the last bytes seen, until the first head ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(self.header, self._idle)
        self.inner.connection_made(transport)

    def _idle(self) -> None:
        if self.transport is not None and self.timer is not None:
            log.info("API: %s sent no request in %.0f s: closed",
                     _peer(self.transport), self.header)  # fmt: skip
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if HEAD_END in seen:
                self.timer.cancel()
                self.timer, self.tail = None, b""
            else:
                self.tail = seen[-(len(HEAD_END) - 1) :]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.inner.connection_lost(exc)
        finally:
            if not self.gone.done():
                self.gone.set_result(None)


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else "?"


def listen(addresses: Sequence[str], port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets; with port 0, one port for all."""
    socks: list[socket.socket] = []
    try:
        for address in addresses:
            sock = _listen(address, port)
            socks.append(sock)
            port = sock.getsockname()[1]
    except OSError as exc:
        for s in socks:
            s.close()
        raise AgentApiError(
            f"cannot listen on [{address}]:{port}: {exc}", hint="pick another --api-port"
        ) from exc
    return socks


def _listen(address: str, port: int) -> socket.socket:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise AgentApiError(f"the API listens on IP addresses, not {address!r}") from exc
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if ip.is_unspecified else 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    """Accepts on ``socks``, runs TLS with ``context`` and hands every connection
    to a protocol from ``factory`` (aiohttp's ``web.Server``). Runs in one event
    loop; ``start`` and ``stop`` are called in it."""

    def __init__(
        self,
        socks: Sequence[socket.socket],
        context: ssl.SSLContext,
        factory: Callable[[], asyncio.Protocol],
        limits: Limits,
    ) -> None:
        if context.verify_mode != ssl.CERT_REQUIRED:
            raise AgentApiError("the agents' API needs client certificates (CERT_REQUIRED)")
        self.socks = list(socks)
        self.context = context
        self.factory = factory
        self.limits = limits
        self.open: dict[asyncio.Task[None], _Watched | None] = {}
        self.refused = 0
        self._accepting: list[asyncio.Task[None]] = []
        self._last_warning = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._accepting = [loop.create_task(self._accept(s)) for s in self.socks]

    async def stop(self) -> None:
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for sock in self.socks:
            sock.close()
        for task, watched in list(self.open.items()):
            if watched is not None and watched.transport is not None:
                watched.transport.abort()
            task.cancel()
        await asyncio.gather(*self.open, return_exceptions=True)

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listening)
            except OSError as exc:  # EMFILE, ECONNABORTED: keep serving
                log.warning("API: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self.open) >= self.limits.connections:
                conn.close()
                self._refuse(peer)
                continue
            task = loop.create_task(self._serve(conn, str(peer[0])))
            self.open[task] = None
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.open.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("API: a connection failed", exc_info=task.exception())

    def _refuse(self, peer: tuple[str, int]) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("API: %d connections open, the most allowed: refused %s (%d so far)",
                        len(self.open), peer[0], self.refused)  # fmt: skip

    async def _serve(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        task = asyncio.current_task()
        assert task is not None

        def protocol() -> asyncio.Protocol:
            watched = _Watched(self.factory(), gone, self.limits.header)
            self.open[task] = watched
            return watched

        try:
            await loop.connect_accepted_socket(
                protocol, conn, ssl=self.context, ssl_handshake_timeout=self.limits.handshake
            )
        except OSError as exc:  # ssl.SSLError, ConnectionAbortedError (the timeout), resets
            log.info("API: TLS with %s failed: %s", peer, exc)
            conn.close()
            return
        await gone
