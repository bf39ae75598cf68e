"""The agents' mutual-TLS API, in process on loopback: a host certificate from
the cluster CA is served; no certificate, another CA's, or a jail's is refused."""

from __future__ import annotations

import shutil
import signal
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from rexcarcer.cluster import RemoteError, api, model, tls
from rexcarcer.cluster.client import _result, up_remote
from rexcarcer.config import Config, load_config
from rexcarcer.errors import Conflict, RuntimeBackendError
from rexcarcer.pki import ca
from rexcarcer.pki.layout import CaPaths
from rexcarcer.rexfile.parser import load
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore


class RecordingApi(api.Api):
    """The real authorisation; ``up`` records what arrived instead of building."""

    def __init__(self, config: Config, store: MemoryStore) -> None:
        super().__init__(config, store)
        self.calls: list[tuple[str, str, bytes]] = []

    def up(self, name: str, rexfile_name: str, body: bytes) -> dict[str, Any]:
        self.calls.append((name, rexfile_name, body))
        if name == "taken":
            raise Conflict("jail 'taken' already exists on host 'h2'", hint="pick another")
        return {"name": name, "state": "running", "host": self.config.host}

    def exec(self, name: str, argv: list[str], sink: Callable[[str], None]) -> int:
        if name == "stopped":
            raise RuntimeBackendError("jail stopped is not running", hint="rex start stopped")
        for word in argv:
            sink(word + "\n")
        return len(argv)


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
    for h in ("h1", "h2"):
        put_json(store, model.host_key(h), {"name": h, "address": "127.0.0.1"})
    server_api = RecordingApi(h2, store)
    server = api.serve(server_api, tls.ensure(h2, "127.0.0.1"), "127.0.0.1", 0)
    try:
        yield h1, h2, server_api, api.url_for("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _rexfile(tmp_path: Path) -> Path:
    rex = tmp_path / "web.rex"
    (tmp_path / "index.html").write_text("hi")
    rex.write_text("BASE busybox\nPROVISION COPY index.html /var/www/index.html\n")
    return rex


def test_a_host_certificate_is_served(cluster: Any, tmp_path: Path) -> None:
    h1, _h2, server_api, url = cluster
    files = tls.ensure(h1, "127.0.0.1")
    info = up_remote(files, url, "h2", load(_rexfile(tmp_path)), "web")
    assert info == {"name": "web", "state": "running", "host": "h2"}
    [(name, file, body)] = server_api.calls
    assert (name, file) == ("web", "web.rex") and b"index.html" in body


def test_the_remote_error_keeps_its_exit_code_and_hint(cluster: Any, tmp_path: Path) -> None:
    h1, _h2, _api, url = cluster
    with pytest.raises(RemoteError) as err:
        up_remote(tls.ensure(h1, "127.0.0.1"), url, "h2", load(_rexfile(tmp_path)), "taken")
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
    with pytest.raises(RemoteError, match="names no registered host"):
        _result("h2", answer.status_code, answer.content)
    assert server_api.calls == []


def test_credentials_are_reused_until_the_ca_or_address_changes(tmp_path: Path) -> None:
    h1 = _host(tmp_path / "h1", "h1")
    _new_ca(h1.root)
    first = tls.ensure(h1, "127.0.0.1").cert.read_bytes()
    assert tls.ensure(h1, "127.0.0.1").cert.read_bytes() == first
    assert tls.ensure(h1, "127.0.0.2").cert.read_bytes() != first


def test_peer_host_needs_the_name_and_the_registered_address() -> None:
    store = MemoryStore()
    put_json(store, model.host_key("h1"), {"name": "h1", "address": "198.51.100.11"})
    view = {e.key: e for e in store.list(model.HOSTS)}
    good = {"subjectAltName": (("DNS", "h1.host.rex.internal"), ("IP Address", "198.51.100.11"))}
    jail = {"subjectAltName": (("DNS", "h1.host.rex.internal"), ("IP Address", "203.0.113.5"))}
    assert api.peer_host(good, view, "rex.internal") == "h1"
    assert api.peer_host(jail, view, "rex.internal") is None
    assert api.peer_host(None, view, "rex.internal") is None


def test_exec_streams_the_output_and_passes_the_status_on(cluster: Any) -> None:
    from types import SimpleNamespace

    from rexcarcer.cluster.client import exec_remote

    h1, _h2, server_api, url = cluster
    store = server_api.store
    put_json(store, model.alive_key("h2"), {"api": url})
    host: Any = SimpleNamespace(config=h1, store=store)
    lines: list[str] = []
    assert exec_remote(host, "h2", "web", ["a", "b c", "d"], lines.append) == 3
    assert lines == ["a\n", "b c\n", "d\n"]
    with pytest.raises(RemoteError, match="on host h2: jail stopped is not running") as err:
        exec_remote(host, "h2", "stopped", ["true"], lines.append)
    assert err.value.exit_code == RuntimeBackendError.exit_code
    bad = httpx.post(f"{url}/v1/jails/web/exec", json={"argv": []},
                     verify=tls.ensure(h1, "127.0.0.1").client_context())  # fmt: skip
    assert bad.status_code == 400 and "non-empty list" in bad.json()["error"]


class FakeHostApi(api.Api):
    """The real ``exec`` (and the status it puts in the exit frame) on a host of
    in-memory drivers instead of the one ``open_host`` would give."""

    def __init__(self, config: Config, store: MemoryStore, host: Any) -> None:
        super().__init__(config, store)
        self.host = host

    @contextmanager
    def _host_for(self, name: str) -> Iterator[Any]:
        yield self.host


def test_a_remote_command_killed_by_a_signal_exits_128_plus_n(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from rexcarcer.cluster.client import exec_remote
    from rexcarcer.engine import jails
    from rexcarcer.rexfile.ast import Base, Rexfile
    from tests.unit.fakes import fake_host

    h1, h2 = _host(tmp_path / "h1", "h1"), _host(tmp_path / "h2", "h2")
    _new_ca(h1.root)
    shutil.copytree(h1.root / "ca", h2.root / "ca")
    store = MemoryStore()
    for h in ("h1", "h2"):
        put_json(store, model.host_key(h), {"name": h, "address": "127.0.0.1"})
    engine = fake_host(tmp_path / "engine")
    jails.up(engine, Rexfile(base=Base("bb"), path=tmp_path / "web.rex"), "web")
    engine.runtime.handler = lambda command: -signal.SIGSEGV  # as subprocess reports it
    server = api.serve(FakeHostApi(h2, store, engine), tls.ensure(h2, "127.0.0.1"),
                       "127.0.0.1", 0)  # fmt: skip
    try:
        url = api.url_for("127.0.0.1", server.server_address[1])
        put_json(store, model.alive_key("h2"), {"api": url})
        host: Any = SimpleNamespace(config=h1, store=store)
        assert exec_remote(host, "h2", "web", ["sh", "-c", "kill -SEGV $$"], print) == 139
    finally:
        server.shutdown()
        server.server_close()
