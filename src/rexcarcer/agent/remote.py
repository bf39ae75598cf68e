"""The agent's API for other hosts: HTTPS with mutual TLS (cluster/tls.py),
served by aiohttp on one asyncio event loop. The client is service/remote.py.

::

    GET  /v1/health                        {"host": NAME}
    POST /v1/up?name=JAIL&file=NAME.rex[&origin=PATH]   body: the build context
         200 {"jail": JailInfo}            the jail runs on this host
    POST /v1/jails/JAIL/start|stop|restart|destroy
         200 {"jail": JailInfo}            (destroy: {"jail": {"name", "destroyed": true}})
    POST /v1/jails/JAIL/exec               body: {"argv": [...]}
         200, one JSON object a line (chunked), as the command writes:
             {"out": LINE} ... then {"exit": STATUS} or {"error", "hint", "exit_code"}
             (STATUS as sh(1) has it: 128+N when signal N killed the command)
         4xx/5xx {"error", "hint", "exit_code"}

Every request, in this order: the client certificate (verified against the
cluster CA in the handshake) must be a registered host's *host* certificate
(cluster/auth.py: signed by the cluster CA itself, with the host-role policy,
naming that host and its address, not revoked; a jail's certificate never
passes), asked again for every request, so a revocation holds at once, else 403;
the method, path, query and headers must be valid (agent/apirequest.py: jail
and file names, ``origin``, Content-Length against the endpoint's cap), else
400/404/405/411/413; only then is the body read. A malformed request line or
header (a negative or non-numeric Content-Length, say) is refused with 400 by
aiohttp's parser before the handler runs. The receiving agent runs the jail
service in process (service/local.py), as a local ``rex up`` would, with its
own store connection; the verbs block, so they run in a bounded thread pool
(``Limits.work_threads``), the authorisation's store reads in another
(``Limits.auth_threads``): the process's threads are bounded, whatever the
number of connections.

Why aiohttp, not uvicorn + Starlette. What this server needs, and what each gives:

- The client certificate in the handler. aiohttp: ``request.transport`` is the
  connection's transport; ``get_extra_info("ssl_object").getpeercert(
  binary_form=True)`` is the DER. uvicorn 0.54 (the latest) passes no
  transport and no certificate to an ASGI application: the ASGI TLS extension
  is not implemented (uvicorn issues #400 and #745; pull requests #1119,
  #2586, #3132 and #3133 still open, #3043 closed), so authorising by
  certificate would mean patching its protocol classes.
- A TLS handshake timeout and a connection bound. Neither server has them as
  settings (uvicorn's ``limit_concurrency`` answers 503 after the handshake);
  aiohttp's ``web.Server`` is documented as a plain asyncio protocol factory,
  so agent/listener.py accepts, counts and hands over the sockets itself with
  asyncio's ``ssl_handshake_timeout``. uvicorn builds its own server.
- An idle/header timeout. aiohttp: ``keepalive_timeout`` between requests;
  uvicorn's ``timeout_keep_alive`` is armed only after a first response
  (uvicorn PR #1192, closed), so a connection that never sends a request
  stays. The first request's deadline is listener.py's in both cases.
- Body caps before reading, streaming responses, IPv6: both. aiohttp's own
  parser already refuses a bad Content-Length with 400 before the handler.
- One dependency (aiohttp and its small C-accelerated helpers) instead of two
  frameworks (uvicorn, Starlette, h11/httptools, anyio); aiohttp is packaged
  for FreeBSD as www/py-aiohttp.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import shutil
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from rexcarcer.agent import apirequest
from rexcarcer.agent.apirequest import Call, Op, Refused
from rexcarcer.agent.listener import Limits, Listener, listen
from rexcarcer.buildctx import unpack
from rexcarcer.cluster import AgentApiError, auth
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
P = ParamSpec("P")
T = TypeVar("T")


class Api:
    """What the handler calls; one per agent. Every method blocks."""

    def __init__(self, config: Config, store: Store, local: LocalService) -> None:
        self.config = config
        self.store = store
        self.local = local

    def caller(self, cert_der: bytes | None) -> str | None:
        return auth.authorize(cert_der, self.store, self.config.zone)

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
            "restart": self.local.restart, "destroy": self._destroy,
        }  # fmt: skip
        if verb not in actions:
            raise AgentApiError(f"no such jail action: {verb}")
        info = actions[verb](name)
        if info is None:
            return {"name": name, "host": self.config.host, "destroyed": True}
        return info.as_json()

    def _destroy(self, name: str) -> None:
        self.local.destroy(name)

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


def _frame(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _peer_der(request: web.BaseRequest) -> bytes | None:
    transport = request.transport
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = obj.getpeercert(binary_form=True) if isinstance(obj, ssl.SSLObject) else None
    return der if isinstance(der, bytes) else None


class _PeerErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs a request its parser refuses (a bad Content-Length, say)
    with a traceback: from a peer, that is one warning line."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc, HttpProcessingError):
            self.logger.warning("API: %s: %s", str(msg) % args, str(exc).replace("\n", " "))
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kw)


class Handler:
    """The aiohttp request handler: authorise, validate, then act."""

    def __init__(self, api: Api, limits: Limits) -> None:
        self.api = api
        self.limits = limits
        self.auth = concurrent.futures.ThreadPoolExecutor(limits.auth_threads, "agent-api-auth")
        self.work = concurrent.futures.ThreadPoolExecutor(limits.work_threads, "agent-api-work")
        self.uploads: asyncio.Semaphore | None = None

    async def _blocking(
        self, pool: concurrent.futures.Executor, fn: Callable[P, T], *args: P.args, **kw: P.kwargs
    ) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kw))

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except Refused as refused:
            resp = _json(refused.status, _error_body(refused.error))
            if refused.allow:
                resp.headers["Allow"] = refused.allow
            resp.force_close()  # a body may follow, unread
            return resp
        except (ConnectionError, web.HTTPException):
            raise  # aiohttp's own: a client gone, a response it makes
        except Exception:  # a bug: said in the log, a 500 to the client, the server goes on
            log.exception("API: %s %s failed", request.method, request.rel_url.raw_path[:200])
            error = AgentApiError("the agent's API failed", hint="its log says why")
            resp = _json(500, _error_body(error))
            resp.force_close()
            return resp

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            who = await self._blocking(self.auth, self.api.caller, _peer_der(request))
        except RexError as exc:
            log.error("API: cannot check a client certificate: %s", exc)
            raise Refused(503, exc) from exc
        if who is None:
            raise Refused(403, AgentApiError(
                "the client certificate is not a registered host's",
                hint="the API serves cluster hosts; `rex hosts` lists them"))  # fmt: skip
        call = apirequest.parse(apirequest.Head(
            request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
            request.headers.get("Content-Length"), "Transfer-Encoding" in request.headers,
            request.headers.get("Content-Encoding", "identity").lower() != "identity"))  # fmt: skip
        if call.op is Op.HEALTH:
            return _json(200, {"host": self.api.config.host})
        if call.op is Op.EXEC:
            return await self._exec(request, who, call)
        if call.op is Op.UP:
            return await self._up(request, who, call)
        log.info("API: %s asks to %s jail %s", who, call.verb, call.jail)
        return await self._verb(f"{call.verb} {call.jail}", who,
                                lambda: self.api.lifecycle(call.jail, call.verb))  # fmt: skip

    async def _verb(self, what: str, who: str, fn: Callable[[], dict[str, Any]]) -> web.Response:
        try:
            info = await self._blocking(self.work, fn)
        except RexError as exc:
            log.warning("API: %s for %s failed: %s", what, who, exc)
            return _json(422, _error_body(exc))
        return _json(200, {"jail": info})

    async def _body(self, request: web.BaseRequest, size: int) -> bytes:
        chunks: list[bytes] = []
        left = size
        while left:
            try:
                chunk = await asyncio.wait_for(request.content.read(min(left, 1 << 20)),
                                               self.limits.body_stall)  # fmt: skip
            except TimeoutError as exc:
                stalled = f"the request body stalled for {self.limits.body_stall:.0f} s"
                raise Refused(408, AgentApiError(stalled)) from exc
            if not chunk:
                raise Refused(400, AgentApiError(f"the request body ended {left} bytes early"))
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    async def _up(self, request: web.BaseRequest, who: str, call: Call) -> web.StreamResponse:
        if self.uploads is None:
            self.uploads = asyncio.Semaphore(self.limits.uploads)
        async with self.uploads:
            body = await self._body(request, call.body)
        log.info("API: %s asks for jail %s (%d bytes of context)", who, call.jail, call.body)
        return await self._verb(
            f"up {call.jail}", who, lambda: self.api.up(call.jail, call.file, call.origin, body)
        )

    async def _exec(self, request: web.BaseRequest, who: str, call: Call) -> web.StreamResponse:
        argv = apirequest.exec_argv(await self._body(request, call.body))
        log.info("API: %s runs %r in jail %s", who, argv, call.jail)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()

        def sink(line: str) -> None:  # in the worker thread: wait, so a slow client slows it
            sent = asyncio.run_coroutine_threadsafe(resp.write(_frame({"out": line})), loop)
            try:
                sent.result(timeout=self.limits.write_stall)
            except (TimeoutError, ConnectionError, concurrent.futures.CancelledError) as exc:
                sent.cancel()
                raise AgentApiError(f"the client of `rex exec {call.jail}` went away") from exc

        try:
            status = await self._blocking(self.work, self.api.exec, call.jail, argv, sink)
            last = {"exit": status}
        except RexError as exc:
            log.warning("API: exec in %s for %s failed: %s", call.jail, who, exc)
            last = _error_body(exc)
        try:
            await resp.write(_frame(last))
            await resp.write_eof()
        except ConnectionError as exc:
            log.info("API: %s left before the end of its exec in %s: %s", who, call.jail, exc)
        return resp

    def close(self) -> None:
        self.auth.shutdown(wait=False, cancel_futures=True)
        self.work.shutdown(wait=False, cancel_futures=True)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


class ApiServer:
    """The API running on its own event loop, in one thread."""

    def __init__(self, api: Api, context: ssl.SSLContext, socks: list[Any], limits: Limits):
        self.api = api
        self.limits = limits
        self.addresses: list[tuple[str, int]] = [s.getsockname()[:2] for s in socks]
        self.handler = Handler(api, limits)
        self._context = context
        self._socks = socks
        self._loop = asyncio.new_event_loop()
        self._listener: Listener | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="agent-api",
                                        daemon=True)  # fmt: skip

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    def reload_certificate(self, cert: Path, key: Path) -> None:
        """Present a renewed certificate from the next handshake on (loaded in
        the loop's thread, where handshakes use the context)."""

        async def load() -> None:
            self._context.load_cert_chain(cert, key)

        asyncio.run_coroutine_threadsafe(load(), self._loop).result()

    def open_connections(self) -> int:
        return len(self._listener.open) if self._listener is not None else 0

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(self.handler.auth)  # nothing else may start threads
        server = web.Server(
            self.handler, keepalive_timeout=self.limits.header, lingering_time=0,
            auto_decompress=False, access_log=None,
            logger=_PeerErrors(logging.getLogger("rexcarcer.agent.http"), {}),
        )  # fmt: skip
        self._listener = Listener(self._socks, self._context, server, self.limits)
        self._listener.start()

    def close(self) -> None:
        """Stop listening, drop every connection, stop the loop's thread."""
        if self._thread.is_alive():
            if self._listener is not None:
                stop = asyncio.run_coroutine_threadsafe(self._listener.stop(), self._loop)
                stop.result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self.handler.close()
        for sock in self._socks:
            sock.close()
        if not self._thread.is_alive():
            self._loop.close()


def serve(
    api: Api,
    files: TlsFiles,
    address: str | Sequence[str],
    port: int,
    limits: Limits | None = None,
) -> ApiServer:
    """Serve the API on ``address`` (or several; ``::`` is dual-stack) in a
    thread; stop it with ``close()``."""
    addresses = [address] if isinstance(address, str) else list(address)
    limits = limits or Limits()
    context = files.server_context()
    server = ApiServer(api, context, listen(addresses, port), _fit(limits))
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    for host, bound in server.addresses:
        log.info("API: %s (mutual TLS)", url_for(host, bound))
    return server


def _fit(limits: Limits) -> Limits:
    """``limits`` with as many connections as this process may open files for:
    the soft RLIMIT_NOFILE is raised towards the hard one when it is short."""
    import resource

    need = limits.connections + 128  # the store, the jails' processes, logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("API: cannot raise the open files limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < need:
        fewer = max(16, soft - 128)
        log.warning("API: %d open files allowed: serving at most %d connections", soft, fewer)
        return replace(limits, connections=fewer)
    return limits


def url_for(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"
