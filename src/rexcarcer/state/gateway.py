"""etcd's HTTP JSON gateway (``/v3/...``) over httpx, with endpoint failover.

Why not etcd3gw, which speaks the same gateway: it talks to one endpoint only,
its watch hangs silently on a compacted revision (notes/dns-and-etcd.md
section 5), and it brings ``requests`` beside the ``httpx`` we already ship.
The gateway itself is small: a POST of JSON per call, base64 keys and values,
int64s as strings, and one streamed POST for watches.

Failover: a call goes to the endpoint that last answered; when it cannot be
reached, or answers that it has no leader, the next one is tried, and a round
of all endpoints is retried for ``retry_for`` seconds (an election takes about
a second with default timings). A write is only retried when it cannot have
been applied (the connection was refused, or the member had no leader); when a
write's outcome is unknown the caller gets ``EtcdUnavailable`` instead of a
second attempt that could report a create it made itself as someone else's.

Every request carries ``Grpc-Metadata-hasleader: true`` (etcd's
``rpctypes.MetadataRequireLeaderKey``): a member cut off from the leader then
refuses, or cancels a watch, instead of serving stale data silently.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rexcarcer.errors import StateError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("rexcarcer.etcd")

API = "/v3"
HEADERS = {"Grpc-Metadata-hasleader": "true"}
# gRPC status codes that mean "this member cannot serve now, nothing was applied"
_RETRY_CODES = {14}  # UNAVAILABLE: no leader, member stopping
_RETRY_TEXT = ("no leader", "not capable")
# this member cannot answer now, but a write may have been applied
_UNKNOWN_TEXT = ("leader changed", "request timed out")


class EtcdUnavailable(StateError):
    """No etcd endpoint answered, or a write's outcome is unknown (exit 35)."""

    exit_code = 35


class EtcdRejected(StateError):
    """etcd answered a request with an error (exit 36); ``code`` is its gRPC status."""

    exit_code = 36

    def __init__(self, message: str, *, code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()  # every key
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def as_int(value: Any) -> int:
    """The gateway sends int64s as strings and leaves out fields at their default."""
    return int(value or 0)


def _unhealthy(message: str) -> EtcdUnavailable:
    return EtcdUnavailable(
        message,
        hint="check that the etcd members in REX_ETCD run and have a leader "
        "(`etcdctl --endpoints=... endpoint health`)",
    )


def _tls_refused(exc: Exception) -> bool:
    """The TLS handshake failed on a certificate (ours or the server's)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
            return True
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    return "CERTIFICATE" in text or "certificate" in text


def _tls_error(url: str, exc: Exception) -> StateError:
    return EtcdRejected(
        f"TLS with etcd at {url} failed: {exc}",
        code=16,  # UNAUTHENTICATED
        hint="check REX_ETCD_CA (the CA of etcd's server certificate) and REX_ETCD_CERT/"
        "REX_ETCD_KEY (a client certificate etcd's --trusted-ca-file signed)",
    )


class Transient(Exception):
    """This endpoint cannot serve now."""

    def __init__(self, reason: str, *, safe: bool) -> None:
        super().__init__(reason)
        self.safe = safe  # nothing can have been applied: a write may be retried


class Gateway:
    """POSTs to the first endpoint that answers."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        retry_for: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        import httpx

        if not endpoints:
            raise StateError("no etcd endpoints given", hint="set REX_ETCD=http://HOST:2379,...")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.retry_for = retry_for
        self.current = 0
        self.client = httpx.Client(timeout=timeout, headers=HEADERS, transport=transport,
                                   verify=tls if tls is not None else True)  # fmt: skip

    def close(self) -> None:
        self.client.close()

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self.current + i) % n for i in range(n)]

    def call(self, path: str, body: dict[str, Any], *, write: bool = False) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>``; the decoded JSON answer."""
        deadline = time.monotonic() + self.retry_for
        reasons: list[str] = []
        while True:
            for index in self._order():
                try:
                    answer = self._post(index, path, body)
                except Transient as exc:
                    reasons.append(f"{self.endpoints[index]}: {exc}")
                    if write and not exc.safe:
                        raise _unhealthy(
                            f"etcd write {path} may or may not have been applied: {exc}"
                        ) from exc
                    continue
                self.current = index
                return answer
            if time.monotonic() >= deadline:
                raise _unhealthy(f"no etcd endpoint answered: {'; '.join(reasons[-3:])}")
            time.sleep(0.2)

    def _post(self, index: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.endpoints[index]}{API}/{path}"
        try:
            resp = self.client.post(url, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if _tls_refused(exc):  # no retry fixes a certificate
                raise _tls_error(url, exc) from exc
            raise Transient(f"cannot connect ({exc})", safe=True) from exc
        except httpx.TransportError as exc:
            if _tls_refused(exc):
                raise _tls_error(url, exc) from exc
            raise Transient(f"{type(exc).__name__}: {exc}", safe=False) from exc
        return _decode(resp.status_code, resp.text, url)

    @contextmanager
    def stream(
        self, path: str, body: dict[str, Any], *, idle: float
    ) -> Iterator[Iterator[dict[str, Any]]]:
        """A streamed POST (``/v3/watch``): yields the messages as they come.

        ``httpx.ReadTimeout`` after ``idle`` seconds without a message, and any
        transport error, reach the caller, who resumes from its last revision."""
        import httpx

        timeout = httpx.Timeout(self.timeout, read=idle)
        last: Exception | None = None
        for index in self._order():
            url = f"{self.endpoints[index]}{API}/{path}"
            request = self.client.build_request("POST", url, json=body, timeout=timeout)
            try:
                resp = self.client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
                continue
            try:
                if resp.status_code != 200:
                    _decode(resp.status_code, resp.read().decode(errors="replace"), url)
            except Transient as exc:
                resp.close()
                last = exc
                continue
            except BaseException:
                resp.close()
                raise
            self.current = index
            try:
                yield _messages(resp.iter_lines())
            finally:
                resp.close()
            return
        raise _unhealthy(f"no etcd endpoint accepted a watch: {last}")


class StreamIdle(Exception):
    """No message for the stream's ``idle`` seconds."""


def _messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    import httpx

    try:
        for line in lines:
            if not line.strip():
                continue
            data = json.loads(line)
            if "error" in data:  # a stream ends with {"error": {...}} on failure
                err = data["error"]
                raise Transient(str(err.get("message", err)), safe=True)
            yield data.get("result", {})
    except httpx.ReadTimeout as exc:
        raise StreamIdle() from exc
    except httpx.TransportError as exc:
        raise Transient(f"stream broken: {type(exc).__name__}: {exc}", safe=True) from exc


def _decode(status: int, text: str, url: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(text) if text else {}
    except ValueError as exc:
        raise Transient(f"HTTP {status}: not JSON: {text[:200]!r}", safe=False) from exc
    if status == 200 and "error" not in data:
        return data
    message = str(data.get("message") or data.get("error") or f"HTTP {status}")
    code = as_int(data.get("code"))
    if code in _RETRY_CODES or any(t in message for t in _RETRY_TEXT):
        raise Transient(message, safe=True)
    if any(t in message for t in _UNKNOWN_TEXT):
        raise Transient(message, safe=False)
    if status == 404 and not data:
        raise EtcdRejected(
            f"{url}: not found (HTTP 404)",
            code=5,
            hint="etcd 3.4 or later serves the JSON gateway under /v3; is this etcd?",
        )
    raise EtcdRejected(f"etcd refused the request: {message}", code=code)
