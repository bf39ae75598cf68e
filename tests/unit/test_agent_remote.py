"""The agents' mutual-TLS API, in process on loopback: a host certificate from
the cluster CA is served; no certificate, another CA's, or a jail's is refused
(what makes a host certificate: tests/unit/test_cluster_auth.py)."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rexcarcer.agent import remote as api
from rexcarcer.cluster import RemoteError, cashare, model, tls
from rexcarcer.config import Config, load_config
from rexcarcer.errors import Conflict, RuntimeBackendError
from rexcarcer.pki import ca
from rexcarcer.pki.layout import CaPaths
from rexcarcer.rexfile.parser import load
from rexcarcer.service.local import LocalService
from rexcarcer.service.remote import RemoteService, result
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore


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

    def exec(self, name: str, argv: list[str], sink: Callable[[str], None]) -> int:
        if name == "stopped":
            raise RuntimeBackendError("jail stopped is not running", hint="rex start stopped")
        for word in argv:
            sink(word + "\n")
        return len(argv)


def _no_engine() -> Any:
    raise AssertionError("the recording API never opens an engine")


def _host(root: Path, name: str) -> Config:
    return load_config(root=root, environ={"REX_HOST": name})


def _new_ca(root: Path) -> None:
    now = ca.utcnow()
    ca.install(CaPaths.under(root), ca.self_signed(ca.CaSettings(), now), now=now)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Config, Config, RecordingApi, str]]:
    h1, h2 = _host(tmp_path / "h1", "h1"), _host(tmp_path / "h2", "h2")
    _new_ca(h1.root)
    shutil.copytree(h1.root / "ca", h2.root / "ca")  # one CA, copied to every host
    store = MemoryStore()
    cashare.publish(store, CaPaths.under(h1.root), "h1")  # `rex cluster init`
    for h in ("h1", "h2"):
        put_json(store, model.host_key(h), {"name": h, "address": "127.0.0.1"})
    server_api = RecordingApi(h2, store)
    server = api.serve(server_api, tls.ensure(h2, "127.0.0.1"), "127.0.0.1", 0)
    url = api.url_for("127.0.0.1", server.server_address[1])
    put_json(store, model.alive_key("h2"), {"api": url})
    try:
        yield h1, h2, server_api, url
    finally:
        server.shutdown()
        server.server_close()


def _rexfile(tmp_path: Path) -> Path:
    rex = tmp_path / "web.rex"
    (tmp_path / "index.html").write_text("hi")
    rex.write_text("BASE busybox\nPROVISION COPY index.html /var/www/index.html\n")
    return rex


def test_a_host_certificate_is_served(cluster: Any, tmp_path: Path) -> None:
    h1, _h2, server_api, _url = cluster
    info = RemoteService(h1, server_api.store, "h2").up(load(_rexfile(tmp_path)), "web")
    assert (info.name, info.state, info.host) == ("web", "running", "h2")
    [(name, file, body)] = server_api.calls
    assert (name, file) == ("web", "web.rex") and b"index.html" in body


def test_the_remote_error_keeps_its_exit_code_and_hint(cluster: Any, tmp_path: Path) -> None:
    h1, _h2, server_api, _url = cluster
    with pytest.raises(RemoteError) as err:
        RemoteService(h1, server_api.store, "h2").up(load(_rexfile(tmp_path)), "taken")
    assert err.value.exit_code == Conflict.exit_code
    assert err.value.message == "on host h2: jail 'taken' already exists on host 'h2'"
    assert err.value.hint == "pick another"


def test_a_client_without_a_certificate_is_refused(cluster: Any) -> None:
    h1, _h2, server_api, url = cluster
    files = tls.ensure(h1, "127.0.0.1")
    bare = ssl.create_default_context(cafile=str(files.trust))  # trusts the server, no cert
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=bare, timeout=5) as http:
        http.get(f"{url}/v1/health")
    assert server_api.calls == []


def test_a_certificate_from_another_ca_is_refused(cluster: Any, tmp_path: Path) -> None:
    _h1, _h2, server_api, url = cluster
    rogue = _host(tmp_path / "rogue", "h1")
    _new_ca(rogue.root)
    files = tls.ensure(rogue, "127.0.0.1")
    ctx = ssl.create_default_context(cafile=str(tls.TlsFiles.under(_h2.root).trust))
    ctx.load_cert_chain(files.cert, files.key)
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=ctx, timeout=5) as http:
        http.get(f"{url}/v1/health")
    assert server_api.calls == []


def test_a_cluster_certificate_that_names_no_host_gets_403(cluster: Any) -> None:
    _h1, h2, server_api, url = cluster
    # a certificate for an unregistered name (as a jail's would be): TLS passes, the API refuses
    stranger = _host(h2.root.parent / "h9", "h9")
    shutil.copytree(h2.root / "ca", stranger.root / "ca")
    files = tls.ensure(stranger, "127.0.0.1")
    with httpx.Client(verify=files.client_context(), timeout=5) as http:
        answer = http.get(f"{url}/v1/health")
    assert answer.status_code == 403
    with pytest.raises(RemoteError, match="is not a registered host's"):
        result("h2", answer.status_code, answer.content)
    assert server_api.calls == []


def test_credentials_are_reused_until_the_ca_or_address_changes(tmp_path: Path) -> None:
    h1 = _host(tmp_path / "h1", "h1")
    _new_ca(h1.root)
    first = tls.ensure(h1, "127.0.0.1").cert.read_bytes()
    assert tls.ensure(h1, "127.0.0.1").cert.read_bytes() == first
    assert tls.ensure(h1, "127.0.0.2").cert.read_bytes() != first


def test_a_jail_certificate_gets_403(cluster: Any, tmp_path: Path) -> None:
    """A jail's real certificate passes the TLS handshake (its chain ends at the
    cluster's root) and is refused by the API, even with the host's name in it."""
    import datetime as dt

    from rexcarcer.model.jail import JailRecord
    from rexcarcer.pki import identity, issue, jailca
    from rexcarcer.pki.layout import JailCaPaths

    _h1, h2, server_api, url = cluster
    authority = jailca.make_local(ca.load(CaPaths.under(h2.root)), JailCaPaths.under(h2.root),
                                  host="h2", zone="rex.internal",
                                  subnet=ipaddress.ip_network("127.0.0.0/8"), public=(),
                                  now=ca.utcnow())  # fmt: skip
    rec = JailRecord.from_json({"name": "evil", "address": "127.0.0.5/8"})
    ident = identity.identity_for(rec, "rex.internal")
    got = issue.issue(authority, ident, dt.datetime.now(dt.UTC))
    (tmp_path / "jail.crt").write_bytes(got.host_crt)  # leaf + jail CA, as in the jail
    (tmp_path / "jail.key").write_bytes(got.key_pem)
    ctx = ssl.create_default_context(cafile=str(tls.TlsFiles.under(h2.root).trust))
    ctx.load_cert_chain(tmp_path / "jail.crt", tmp_path / "jail.key")
    # one connection each: the server closes the connection after a 403
    with httpx.Client(verify=ctx, timeout=5) as http:
        assert http.get(f"{url}/v1/health").status_code == 403
    with httpx.Client(verify=ctx, timeout=5) as http:
        assert http.post(f"{url}/v1/jails/web/destroy").status_code == 403
    assert server_api.calls == []


def test_exec_streams_the_output_and_passes_the_status_on(cluster: Any) -> None:
    h1, _h2, server_api, url = cluster
    door = RemoteService(h1, server_api.store, "h2")
    lines: list[str] = []
    assert door.exec("web", ["a", "b c", "d"], interactive=False, sink=lines.append) == 3
    assert lines == ["a\n", "b c\n", "d\n"]
    with pytest.raises(RemoteError, match="on host h2: jail stopped is not running") as err:
        door.exec("stopped", ["true"], interactive=False, sink=lines.append)
    assert err.value.exit_code == RuntimeBackendError.exit_code
    bad = httpx.post(f"{url}/v1/jails/web/exec", json={"argv": []},
                     verify=tls.ensure(h1, "127.0.0.1").client_context())  # fmt: skip
    assert bad.status_code == 400 and "non-empty list" in bad.json()["error"]
