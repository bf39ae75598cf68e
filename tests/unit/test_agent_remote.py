"""The agents' mutual-TLS API, in process on loopback: a host certificate from
the cluster CA is served; no certificate, another CA's, a jail's or a revoked
one is refused; every request is checked before its body is read; idle
connections are closed and bounded. tests/integration/test_agent_api.py runs it
against a real jail with hundreds of idle connections."""

from __future__ import annotations

import shutil
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rexcarcer.agent import remote as api
from rexcarcer.agent.listener import Limits
from rexcarcer.cluster import RemoteError, tls
from rexcarcer.config import Config
from rexcarcer.errors import Conflict, RuntimeBackendError
from rexcarcer.pki import registry
from rexcarcer.pki.layout import CaPaths
from rexcarcer.rexfile.parser import load
from rexcarcer.service.local import LocalService
from rexcarcer.service.remote import RemoteService, result
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore
from tests.api_support import (
    client_context,
    close_all,
    count_open,
    error_of,
    host_config,
    idle_tcp,
    idle_tls,
    new_ca,
    publish_ca,
    raw,
    register,
    share_ca,
    wait_closed,
)


class RecordingApi(api.Api):
    """The real authorisation; ``up`` records what arrived instead of building."""

    def __init__(self, config: Config, store: MemoryStore) -> None:
        super().__init__(config, store, LocalService(_no_engine))
        self.calls: list[tuple[str, str, bytes]] = []

    def up(self, name: str, rexfile_name: str, origin: str | None, body: bytes) -> dict[str, Any]:
        self.calls.append((name, rexfile_name, body))
        if name == "taken":
            raise Conflict("jail 'taken' already exists on host 'h2'", hint="pick another")
        return {"name": name, "state": "running", "host": self.config.host, "ips": []}

    def lifecycle(self, name: str, verb: str) -> dict[str, Any]:
        self.calls.append((name, verb, b""))
        return {"name": name, "state": "running", "host": self.config.host, "ips": []}

    def exec(self, name: str, argv: list[str], sink: Callable[[str], None]) -> int:
        if name == "stopped":
            raise RuntimeBackendError("jail stopped is not running", hint="rex start stopped")
        for word in argv:
            sink(word + "\n")
        return len(argv)


def _no_engine() -> Any:
    raise AssertionError("the recording API never opens an engine")


Cluster = tuple[Config, Config, RecordingApi, api.ApiServer]


def _serve(tmp_path: Path, limits: Limits | None = None) -> Iterator[Cluster]:
    h1, h2 = host_config(tmp_path / "h1", "h1"), host_config(tmp_path / "h2", "h2")
    share_ca(h1, h2)
    store = MemoryStore()
    publish_ca(store, h1)
    for h in ("h1", "h2"):
        register(store, h, "127.0.0.1")
    server_api = RecordingApi(h2, store)
    server = api.serve(server_api, tls.ensure(h2, "127.0.0.1"), "127.0.0.1", 0, limits)
    put_json(store, "hosts/h2/alive", {"api": api.url_for("127.0.0.1", server.port)})
    try:
        yield h1, h2, server_api, server
    finally:
        server.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from _serve(tmp_path)


def _url(server: api.ApiServer) -> str:
    return api.url_for("127.0.0.1", server.port)


def _rexfile(tmp_path: Path) -> Path:
    rex = tmp_path / "web.rex"
    (tmp_path / "index.html").write_text("hi")
    rex.write_text("BASE busybox\nPROVISION COPY index.html /var/www/index.html\n")
    return rex


def test_a_host_certificate_is_served(cluster: Cluster, tmp_path: Path) -> None:
    h1, _h2, server_api, _server = cluster
    info = RemoteService(h1, server_api.store, "h2").up(load(_rexfile(tmp_path)), "web")
    assert (info.name, info.state, info.host) == ("web", "running", "h2")
    [(name, file, body)] = server_api.calls
    assert (name, file) == ("web", "web.rex") and b"index.html" in body


def test_the_remote_error_keeps_its_exit_code_and_hint(cluster: Cluster, tmp_path: Path) -> None:
    h1, _h2, server_api, _server = cluster
    with pytest.raises(RemoteError) as err:
        RemoteService(h1, server_api.store, "h2").up(load(_rexfile(tmp_path)), "taken")
    assert err.value.exit_code == Conflict.exit_code
    assert err.value.message == "on host h2: jail 'taken' already exists on host 'h2'"
    assert err.value.hint == "pick another"


def test_a_client_without_a_certificate_is_refused(cluster: Cluster) -> None:
    h1, _h2, server_api, server = cluster
    files = tls.ensure(h1, "127.0.0.1")
    bare = ssl.create_default_context(cafile=str(files.trust))  # trusts the server, no cert
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=bare, timeout=5) as http:
        http.get(f"{_url(server)}/v1/health")
    assert server_api.calls == []


def test_a_certificate_from_another_ca_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    _h1, h2, server_api, server = cluster
    rogue = host_config(tmp_path / "rogue", "h1")
    new_ca(rogue.root)
    files = tls.ensure(rogue, "127.0.0.1")
    ctx = ssl.create_default_context(cafile=str(tls.TlsFiles.under(h2.root).trust))
    ctx.load_cert_chain(files.cert, files.key)
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=ctx, timeout=5) as http:
        http.get(f"{_url(server)}/v1/health")
    assert server_api.calls == []


def test_a_cluster_certificate_that_names_no_host_gets_403(cluster: Cluster) -> None:
    _h1, h2, server_api, server = cluster
    # a certificate for an unregistered name (as a jail's would be): TLS passes, the API refuses
    stranger = host_config(h2.root.parent / "h9", "h9")
    shutil.copytree(h2.root / "ca", stranger.root / "ca")
    ctx = client_context(stranger, "127.0.0.1")
    with httpx.Client(verify=ctx, timeout=5) as http:
        answer = http.get(f"{_url(server)}/v1/health")
    assert answer.status_code == 403
    with pytest.raises(RemoteError, match="is not a registered host's"):
        result("h2", answer.status_code, answer.content)
    # refused before the request is looked at: a bad name is no 400 for a stranger
    status, _ = raw("127.0.0.1", server.port, ctx, "POST /v1/up?name=../x&file=a.rex HTTP/1.1")
    assert status == 403
    assert server_api.calls == []


def test_a_revoked_host_certificate_is_refused_at_once(cluster: Cluster) -> None:
    h1, h2, server_api, server = cluster
    files = tls.ensure(h1, "127.0.0.1")
    with httpx.Client(verify=files.client_context(), timeout=5) as http:
        assert http.get(f"{_url(server)}/v1/health").status_code == 200
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        issuer = CaPaths.under(h2.root).fingerprint()
        assert issuer is not None
        rev = registry.Revoked(cert.serial_number, "h1", "keyCompromise", int(time.time()),
                               0, issuer)  # fmt: skip
        assert server_api.store.commit([], [registry.revocation(rev, "host")])
        # the same kept-alive connection: refused at the next request
        answer = http.get(f"{_url(server)}/v1/health")
    assert answer.status_code == 403


def test_a_jail_certificate_gets_403(cluster: Cluster, tmp_path: Path) -> None:
    """A jail's real certificate passes the TLS handshake (its chain ends at the
    cluster's root) and is refused by the API, even with the host's name in it."""
    import datetime as dt
    import ipaddress

    from rexcarcer.model.jail import JailRecord
    from rexcarcer.pki import ca, identity, issue, jailca
    from rexcarcer.pki.layout import JailCaPaths

    _h1, h2, server_api, server = cluster
    authority = jailca.make_local(ca.load(CaPaths.under(h2.root)), JailCaPaths.under(h2.root),
                                  host="h2", zone="rex.internal",
                                  subnet=ipaddress.ip_network("127.0.0.0/8"), public=(),
                                  now=ca.utcnow())  # fmt: skip
    rec = JailRecord.from_json({"name": "evil", "address": "127.0.0.5/8"})
    got = issue.issue(
        authority, identity.identity_for(rec, "rex.internal"), dt.datetime.now(dt.UTC)
    )
    (tmp_path / "jail.crt").write_bytes(got.host_crt)  # leaf + jail CA, as in the jail
    (tmp_path / "jail.key").write_bytes(got.key_pem)
    ctx = ssl.create_default_context(cafile=str(tls.TlsFiles.under(h2.root).trust))
    ctx.load_cert_chain(tmp_path / "jail.crt", tmp_path / "jail.key")
    # one connection each: the server closes the connection after a 403
    with httpx.Client(verify=ctx, timeout=5) as http:
        assert http.get(f"{_url(server)}/v1/health").status_code == 403
    with httpx.Client(verify=ctx, timeout=5) as http:
        assert http.post(f"{_url(server)}/v1/jails/web/destroy").status_code == 403
    assert server_api.calls == []


def test_credentials_are_reused_until_the_ca_or_address_changes(tmp_path: Path) -> None:
    h1 = host_config(tmp_path / "h1", "h1")
    new_ca(h1.root)
    first = tls.ensure(h1, "127.0.0.1").cert.read_bytes()
    assert tls.ensure(h1, "127.0.0.1").cert.read_bytes() == first
    assert tls.ensure(h1, "127.0.0.2").cert.read_bytes() != first


def test_exec_streams_the_output_and_passes_the_status_on(cluster: Cluster) -> None:
    h1, _h2, server_api, server = cluster
    door = RemoteService(h1, server_api.store, "h2")
    lines: list[str] = []
    assert door.exec("web", ["a", "b c", "d"], interactive=False, sink=lines.append) == 3
    assert lines == ["a\n", "b c\n", "d\n"]
    with pytest.raises(RemoteError, match="on host h2: jail stopped is not running") as err:
        door.exec("stopped", ["true"], interactive=False, sink=lines.append)
    assert err.value.exit_code == RuntimeBackendError.exit_code
    ctx = client_context(h1, "127.0.0.1")
    bad = httpx.post(f"{_url(server)}/v1/jails/web/exec", json={"argv": []}, verify=ctx)
    assert bad.status_code == 400 and "non-empty list" in bad.json()["error"]
    nul = httpx.post(f"{_url(server)}/v1/jails/web/exec", json={"argv": ["a\0b"]}, verify=ctx)
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]


@pytest.mark.parametrize(
    ("head", "status", "exit_code"),
    [
        ("POST /v1/up?name=../../victim&file=app.rex", 400, 2),
        ("POST /v1/up?name=web&file=../app.rex", 400, 2),
        ("POST /v1/up?name=web&file=..", 400, 2),
        ("POST /v1/up?name=web&file=app.rex&origin=a%0Ab", 400, 38),
        ("POST /v1/up?name=web&file=app.rex&x=1", 400, 38),
        ("POST /v1/up?name=web&name=web2&file=app.rex", 400, 38),
        ("POST /v1/up?file=app.rex", 400, 38),
        ("POST /v1/jails/Bad_Name/start", 400, 2),
        ("POST /v1/jails/..%2F..%2Fetc/start", 400, 2),
        ("POST /v1/jails/web/start?force=1", 400, 38),
        ("POST /v1/jails/web/reboot", 404, 38),
        ("POST /v1/jails/web/exec?x=1", 400, 38),
        ("GET /v1/health?verbose=1", 400, 38),
        ("GET /v1/up?name=web&file=app.rex", 405, 38),
        ("GET /v2/health", 404, 38),
    ],
)
def test_names_and_parameters_are_checked_before_the_body(
    cluster: Cluster, head: str, status: int, exit_code: int
) -> None:
    h1, _h2, server_api, server = cluster
    # a Content-Length is announced and no body follows: reading it would hang
    got, payload = raw("127.0.0.1", server.port, client_context(h1, "127.0.0.1"),
                       f"{head} HTTP/1.1\r\nHost: h2\r\nContent-Length: 100")  # fmt: skip
    assert (got, error_of(payload)["exit_code"]) == (status, exit_code), payload
    assert server_api.calls == []


@pytest.mark.parametrize(
    ("path", "length", "status"),
    [
        ("/v1/up?name=web&file=app.rex", "-1", 400),
        ("/v1/up?name=web&file=app.rex", "abc", 400),
        # an overflow: 400 from aiohttp's C parser (llhttp), 413 from its Python one
        ("/v1/up?name=web&file=app.rex", str(2**64), (400, 413)),
        ("/v1/up?name=web&file=app.rex", str(2**63), 413),
        ("/v1/up?name=web&file=app.rex", str((1 << 30) + 1), 413),
        ("/v1/jails/web/exec", str((1 << 20) + 1), 413),
        ("/v1/jails/web/start", "5", 400),
        ("/v1/up?name=web&file=app.rex", "0", 400),
    ],
)
def test_content_lengths_are_checked_before_the_body(
    cluster: Cluster, path: str, length: str, status: int | tuple[int, ...]
) -> None:
    h1, _h2, server_api, server = cluster
    head = f"POST {path} HTTP/1.1\r\nHost: h2\r\nContent-Length: {length}"
    got, _payload = raw("127.0.0.1", server.port, client_context(h1, "127.0.0.1"), head)
    assert got in (status if isinstance(status, tuple) else (status,))
    assert server_api.calls == []


def test_a_body_without_a_length_or_compressed_is_refused(cluster: Cluster) -> None:
    h1, _h2, server_api, server = cluster
    ctx = client_context(h1, "127.0.0.1")
    up = "POST /v1/up?name=web&file=app.rex HTTP/1.1\r\nHost: h2"
    status, _ = raw("127.0.0.1", server.port, ctx, up + "\r\nTransfer-Encoding: chunked",
                    b"5\r\nhello\r\n0\r\n\r\n")  # fmt: skip
    assert status == 411
    status, _ = raw("127.0.0.1", server.port, ctx,
                    up + "\r\nContent-Length: 5\r\nContent-Encoding: gzip", b"hello")  # fmt: skip
    assert status == 400
    assert server_api.calls == []


def test_idle_connections_are_closed_and_bounded(tmp_path: Path) -> None:
    limits = Limits(handshake=0.5, header=0.5, connections=8)
    for h1, _h2, _api, server in _serve(tmp_path, limits):
        ctx = client_context(h1, "127.0.0.1")
        tcp = idle_tcp("127.0.0.1", server.port, 4)
        held = idle_tls("127.0.0.1", server.port, ctx, 4)
        # at the bound: one more is closed at once, even before its handshake
        [extra] = idle_tcp("127.0.0.1", server.port, 1)
        wait_closed([extra], within=0.3)
        assert count_open(tcp + held) == 8
        assert wait_closed(tcp + held, within=5) >= 0.3
        assert server.open_connections() == 0
        status, payload = raw("127.0.0.1", server.port, ctx, "GET /v1/health HTTP/1.1")
        assert (status, payload) == (200, b'{"host": "h2"}')
        # a head sent byte by byte, never finished, counts as idle too
        [slow] = idle_tls("127.0.0.1", server.port, ctx, 1)
        slow.sendall(b"GET /v1/health HTTP/1.1\r\n")
        time.sleep(0.2)
        slow.sendall(b"Host: h2\r\n")
        wait_closed([slow], within=3)
        close_all([*tcp, *held, extra, slow])


def test_ipv6_and_dual_stack(tmp_path: Path) -> None:
    h1, h2 = host_config(tmp_path / "h1", "h1"), host_config(tmp_path / "h2", "h2")
    share_ca(h1, h2)
    store = MemoryStore()
    publish_ca(store, h1)
    register(store, "h1", "0:0:0:0:0:0:0:1")  # the certificate says ::1: one address
    files = tls.ensure(h2, "::1")
    for addresses in (["::1", "127.0.0.1"], ["::"]):
        server = api.serve(RecordingApi(h2, store), files, addresses, 0)
        try:
            for address in ("::1", "127.0.0.1"):
                ctx = client_context(h1, "::1")
                ctx.check_hostname = False  # the server's certificate names ::1 only
                status, payload = raw(address, server.port, ctx, "GET /v1/health HTTP/1.1")
                assert (status, payload) == (200, b'{"host": "h2"}'), (addresses, address)
        finally:
            server.close()
