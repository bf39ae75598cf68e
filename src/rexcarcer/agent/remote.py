"""The agent's API for other hosts: HTTPS with mutual TLS (cluster/tls.py), stdlib
``http.server`` in a thread. The client is service/remote.py.

::

    GET  /v1/health                        {"host": NAME}
    POST /v1/up?name=JAIL&file=NAME.rex    body: the build context (context.py)
         200 {"jail": JailInfo}            the jail runs on this host
    POST /v1/jails/JAIL/start|stop|restart|destroy
         200 {"jail": JailInfo}            (destroy: {"jail": {"name", "destroyed": true}})
    POST /v1/jails/JAIL/exec               body: {"argv": [...]}
         200, one JSON object per line, until the connection closes:
             {"out": LINE} ... then {"exit": STATUS} or {"error", "hint", "exit_code"}
             (STATUS as sh(1) has it: 128+N when signal N killed the command)
         4xx/5xx {"error", "hint", "exit_code"}

The receiving agent runs the jail service in process (service/local.py), as a
local ``rex up`` would, with its own store connection. A peer is served only if
its certificate (checked against the cluster CA in the TLS handshake) is a host
certificate of a registered host, not revoked (cluster/auth.py: signed by the
cluster CA itself, with the host-role policy, naming that host and its address);
anything else, a jail's certificate first of all, gets 403 before the body is
read.
"""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rexcarcer.buildctx import MAX_CONTEXT, unpack
from rexcarcer.cluster import AgentApiError
from rexcarcer.cluster.auth import authorize
from rexcarcer.cluster.tls import TlsFiles
from rexcarcer.config import Config
from rexcarcer.errors import RexError
from rexcarcer.model.jail import JailInfo
from rexcarcer.names import check_jail_name
from rexcarcer.run import OutputSink
from rexcarcer.service.local import LocalService
from rexcarcer.state.base import Store

log = logging.getLogger("rexcarcer.agent")

DEFAULT_PORT = 7443
MAX_EXEC_BODY = 1 << 20  # an argv, not a file


VERBS = ("start", "stop", "restart", "destroy")


class Api:
    """What the handler calls; one per agent."""

    def __init__(self, config: Config, store: Store, local: LocalService) -> None:
        self.config = config
        self.store = store
        self.local = local

    def caller(self, cert_der: bytes | None) -> str | None:
        """The host a client certificate belongs to (cluster/auth.py), or None."""
        return authorize(cert_der, self.store, self.config.zone)

    def up(self, name: str, rexfile_name: str, origin: str | None, body: bytes) -> dict[str, Any]:
        from rexcarcer.rexfile.parser import load

        check_jail_name(name)
        work = Path(tempfile.mkdtemp(prefix="ctx-", dir=self._work_dir()))
        try:
            rexfile = replace(load(unpack(body, work, rexfile_name)), origin=origin)
            return self.local.up(rexfile, name).as_json()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def lifecycle(self, name: str, verb: str) -> dict[str, Any]:
        """``rex start|stop|restart|destroy NAME`` for a jail of this host."""
        check_jail_name(name)
        actions: dict[str, Callable[[str], JailInfo | None]] = {
            "start": self.local.start, "stop": self.local.stop,
            "restart": self.local.restart, "destroy": self.local.destroy,
        }  # fmt: skip
        if verb not in actions:
            raise AgentApiError(f"no such jail action: {verb}")
        info = actions[verb](name)
        if info is None:
            return {"name": name, "host": self.config.host, "destroyed": True}
        return info.as_json()

    def exec(self, name: str, argv: list[str], sink: OutputSink) -> int:
        """``rex exec NAME -- ARGV`` for a jail of this host, output to ``sink``."""
        check_jail_name(name)
        return self.local.exec(name, argv, interactive=False, sink=sink)

    def _work_dir(self) -> Path:
        d = self.config.root / "run" / "contexts"
        d.mkdir(parents=True, exist_ok=True)
        return d


def _error_body(exc: RexError) -> dict[str, Any]:
    return {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> str | None:
        conn = self.connection
        cert = conn.getpeercert(binary_form=True) if isinstance(conn, ssl.SSLSocket) else None
        who = self.server.api.caller(cert)
        if who is None:
            self.close_connection = True
            self._send(403, {"error": "the client certificate is not a registered host's",
                             "hint": None, "exit_code": AgentApiError.exit_code})  # fmt: skip
        return who

    def do_GET(self) -> None:
        if self._authorised() is None:
            return
        if urlsplit(self.path).path != "/v1/health":
            self._send(404, _error_body(AgentApiError(f"no such endpoint: {self.path}")))
            return
        self._send(200, {"host": self.server.api.config.host})

    def do_POST(self) -> None:
        who = self._authorised()
        if who is None:
            return
        url = urlsplit(self.path)
        parts = url.path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "v1", "jails"] and parts[4] in VERBS:
            self._lifecycle(who, parts[3], parts[4])
            return
        if len(parts) == 5 and parts[:3] == ["", "v1", "jails"] and parts[4] == "exec":
            self._exec(who, parts[3])
            return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if url.path != "/v1/up" or not query.get("name") or not query.get("file"):
            self._send(400, _error_body(AgentApiError(f"bad request: {self.path}")))
            return
        if length > MAX_CONTEXT:
            self.close_connection = True
            self._send(413, _error_body(AgentApiError("the build context is too large")))
            return
        body = self.rfile.read(length)
        log.info("API: %s asks for jail %s (%d bytes of context)", who, query["name"], length)
        try:
            info = self.server.api.up(query["name"], query["file"], query.get("origin"), body)
        except RexError as exc:
            log.warning("API: up %s for %s failed: %s", query["name"], who, exc)
            self._send(422, _error_body(exc))
            return
        self._send(200, {"jail": info})

    def _lifecycle(self, who: str, name: str, verb: str) -> None:
        if int(self.headers.get("Content-Length") or 0):
            self.close_connection = True
            self._send(400, _error_body(AgentApiError(f"{verb} takes no body")))
            return
        log.info("API: %s asks to %s jail %s", who, verb, name)
        try:
            info = self.server.api.lifecycle(name, verb)
        except RexError as exc:
            log.warning("API: %s %s for %s failed: %s", verb, name, who, exc)
            self._send(422, _error_body(exc))
            return
        self._send(200, {"jail": info})

    def _exec(self, who: str, name: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            argv = json.loads(self.rfile.read(min(length, MAX_EXEC_BODY)))["argv"]
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise ValueError("argv must be a non-empty list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            self.close_connection = True
            self._send(400, _error_body(AgentApiError(f"bad exec request: {exc}")))
            return
        log.info("API: %s runs %r in jail %s", who, argv, name)
        self.close_connection = True  # the body ends when the connection does
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")
        self.end_headers()

        def frame(obj: dict[str, Any]) -> None:
            self.wfile.write(json.dumps(obj).encode() + b"\n")
            self.wfile.flush()

        try:
            status = self.server.api.exec(name, argv, lambda line: frame({"out": line}))
        except RexError as exc:
            frame(_error_body(exc))
            return
        frame({"exit": status})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("API: " + format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: Api, files: TlsFiles) -> None:
        self.api = api
        self.context = files.server_context()
        super().__init__(address, Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        # the handshake runs in the request's thread, at its first read
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), addr  # fmt: skip

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        log.warning("API: request from %s failed: %s", client_address[0], sys.exc_info()[1])


def serve(api: Api, files: TlsFiles, address: str, port: int) -> Server:
    """Start the API in a thread; stop it with ``server.shutdown()``."""
    try:
        server = Server((address, port), api, files)
    except OSError as exc:
        raise AgentApiError(
            f"cannot listen on {address}:{port}: {exc}", hint="pick another --api-port"
        ) from exc
    threading.Thread(target=server.serve_forever, name="agent-api", daemon=True).start()
    log.info("API: https://%s:%d (mutual TLS)", address, port)
    return server


def url_for(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"
