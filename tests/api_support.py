"""Helpers for the tests of the agents' mutual-TLS API: hosts sharing one CA in
temporary state directories, raw HTTP/1.1 over TLS (to send what httpx never
would), and connections that are opened and then left idle."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import time
from collections.abc import Iterable
from pathlib import Path

from rexcarcer.cluster import cashare, model, tls
from rexcarcer.config import Config, load_config
from rexcarcer.pki import ca
from rexcarcer.pki.layout import CaPaths
from rexcarcer.state.base import Store, put_json


def host_config(root: Path, name: str) -> Config:
    return load_config(root=root, environ={"REX_HOST": name})


def new_ca(root: Path) -> None:
    now = ca.utcnow()
    ca.install(CaPaths.under(root), ca.self_signed(ca.CaSettings(), now), now=now)


def share_ca(first: Config, *others: Config) -> None:
    """One CA, made on ``first`` and copied to every other host."""
    new_ca(first.root)
    for other in others:
        shutil.copytree(first.root / "ca", other.root / "ca")


def register(store: Store, host: str, address: str) -> None:
    put_json(store, model.host_key(host), {"name": host, "address": address})


def publish_ca(store: Store, ca_host: Config) -> None:
    """`rex cluster init` on ``ca_host``: the cluster's record of its CA, which
    the API checks a host certificate's signature against."""
    cashare.publish(store, CaPaths.under(ca_host.root), ca_host.host)


def client_context(config: Config, address: str) -> ssl.SSLContext:
    return tls.ensure(config, address).client_context()


def raw(
    address: str, port: int, ctx: ssl.SSLContext, head: str, body: bytes = b""
) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, without the empty line) and
    ``body`` on a new connection; the status and the body of the answer. The
    server closes the connection after it (``Connection: close``); a ``Host``
    header is added when ``head`` has none (HTTP/1.1 requires one)."""
    if "\r\nhost:" not in head.lower():
        head += "\r\nHost: agent"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as plain:
        plain.settimeout(10)
        plain.connect((address, port))
        with ctx.wrap_socket(plain, server_hostname=address) as conn:
            conn.sendall(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)
            data = b""
            while chunk := _recv(conn):
                data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        payload = _dechunk(payload)
    return int(status_line.split()[1]), payload


def _recv(conn: ssl.SSLSocket) -> bytes:
    try:
        return conn.recv(65536)
    except (ConnectionResetError, ssl.SSLEOFError):  # closed after the answer
        return b""


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + data[:n], data[n + 2 :]
    return out


def error_of(payload: bytes) -> dict[str, object]:
    body = json.loads(payload)
    assert set(body) == {"error", "hint", "exit_code"}, body
    assert isinstance(body, dict)
    return body


def idle_tcp(address: str, port: int, n: int) -> list[socket.socket]:
    """``n`` connections that never start TLS."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    out = []
    for _ in range(n):
        s = socket.socket(family)
        s.settimeout(10)
        s.connect((address, port))
        out.append(s)
    return out


def idle_tls(address: str, port: int, ctx: ssl.SSLContext, n: int) -> list[socket.socket]:
    """``n`` connections that finish the TLS handshake and send nothing."""
    out: list[socket.socket] = []
    for plain in idle_tcp(address, port, n):
        out.append(ctx.wrap_socket(plain, server_hostname=address))
    return out


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds ``sock``'s connection (it sent nothing)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # b"": the server closed it
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:  # reset, or a TLS connection cut without close_notify
        return False
    finally:
        sock.settimeout(10)


def count_open(socks: Iterable[socket.socket]) -> int:
    return sum(is_open(s) for s in socks)


def wait_closed(socks: list[socket.socket], within: float) -> float:
    """Seconds until the server closed every one of ``socks``; fails after ``within``."""
    start = time.monotonic()
    while count_open(socks):
        if time.monotonic() - start > within:
            raise AssertionError(f"{count_open(socks)} of {len(socks)} still open after {within} s")
        time.sleep(0.1)
    return time.monotonic() - start


def close_all(socks: Iterable[socket.socket]) -> None:
    for s in socks:
        s.close()
