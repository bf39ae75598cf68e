"""A real HTTP(S) file server for base tests and the fetch bench.

Standard library ``http.server`` in a thread, with ``Range`` support, a request
log and switchable faults (an HTTP status, a connection cut after N body bytes,
Range ignored). It listens on 127.0.0.1 inside a given network namespace (the
serving thread enters it with setns(2) before it opens its socket), so that
``rex`` running in that namespace reaches it and nothing else can. TLS uses a
``trustme`` test CA whose certificate the tests hand to rex as its CA bundle.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import ssl
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
_RANGE = re.compile(r"^bytes=(\d+)-$")


def enter_netns(name: str) -> None:
    """Move the calling thread into the network namespace /run/netns/NAME."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Faults:
    status: int | None = None  # answer every request with this status
    cut: int | None = None  # close the connection after this many body bytes
    cut_suffix: str = ".zfs.bz2"  # ... of files ending so
    ignore_range: bool = False
    no_listing: bool = False  # a directory is 404 (a server without autoindex)


@dataclass
class Control:
    root: Path
    faults: Faults = field(default_factory=Faults)
    log: list[tuple[str, str | None]] = field(default_factory=list)
    sent: list[tuple[str, int]] = field(default_factory=list)  # file body bytes written

    def gets(self, suffix: str) -> list[str | None]:
        """The Range headers of the requests for paths ending in ``suffix``."""
        return [rng for path, rng in self.log if path.endswith(suffix)]

    def bytes_sent(self, suffix: str) -> int:
        """Body bytes of files sent for paths ending in ``suffix``."""
        return sum(n for path, n in self.sent if path.endswith(suffix))


class Handler(SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        control = self.server.control
        control.log.append((self.path, self.headers.get("Range")))
        if control.faults.status is not None:
            self.send_error(control.faults.status)
            return
        path = Path(self.translate_path(self.path))
        if path.is_dir() and not control.faults.no_listing:
            super().do_GET()  # the directory listing rex reads to name signers
            return
        if not path.is_file():
            self.send_error(404)
            return
        self._send_file(path, control)

    def _send_file(self, path: Path, control: Control) -> None:
        size = path.stat().st_size
        m = _RANGE.match(self.headers.get("Range") or "")
        start = int(m.group(1)) if m and not control.faults.ignore_range else 0
        if start >= size and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        left = size - start
        if control.faults.cut is not None and path.name.endswith(control.faults.cut_suffix):
            left = min(left, control.faults.cut)
            self.close_connection = True
        sent = 0
        try:
            with path.open("rb") as f:
                f.seek(start)
                while left > 0:
                    chunk = f.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
                    sent += len(chunk)
        finally:
            control.sent.append((self.path, sent))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    control: Control


class FileServer:
    """``with FileServer(root, netns=..., tls=ca) as srv: srv.url``"""

    def __init__(self, root: Path, *, netns: str | None, tls: Any | None = None) -> None:
        self.control = Control(root)
        self.netns = netns
        self.tls = tls  # a trustme.CA, or None for plain http
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        port = self._httpd.server_address[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    def _serve(self) -> None:
        try:
            if self.netns:
                enter_netns(self.netns)
            root = str(self.control.root)
            httpd = _Server(("127.0.0.1", 0), lambda *a: Handler(*a, directory=root))
            httpd.control = self.control
            if self.tls is not None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                self.tls.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
                httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
            self._httpd = httpd
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        httpd.serve_forever(poll_interval=0.05)

    def __enter__(self) -> FileServer:
        self._thread = threading.Thread(target=self._serve, name="base-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest
