"""rex towards an etcd that requires TLS client certificates (--client-cert-auth),
a real etcd on 127.0.0.1 with a test CA: the store, a watch and the CLI work
with REX_ETCD_CA/CERT/KEY, `rex cluster join` keeps them in the host's
configuration, and a missing or foreign certificate is refused at once with an
error that says TLS."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from rexcarcer.cluster.store import open_etcd
from rexcarcer.config import Config, load_config
from rexcarcer.errors import ConfigError
from rexcarcer.state.base import Delete, Put
from rexcarcer.state.etcd import EtcdStore, tls_context
from rexcarcer.state.gateway import EtcdRejected
from rexcarcer.state.watch import Kind
from tests.etcd_support import EtcdCluster, Member, free_port, require_etcd


def _tls(config: Config) -> ssl.SSLContext | None:
    return tls_context(config.etcd_ca, config.etcd_cert, config.etcd_key)


class Tls:
    def __init__(self, work: Path) -> None:
        self.ca = trustme.CA()
        self.dir = work
        self.ca_pem = work / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        server = self.ca.issue_cert("127.0.0.1")
        self.server_cert, self.server_key = work / "server.pem", work / "server.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client = self.ca.issue_cert("h1.host.rex.internal")
        self.client_cert, self.client_key = work / "client.pem", work / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))

    def env(self) -> dict[str, str]:
        return {"REX_ETCD_CA": str(self.ca_pem), "REX_ETCD_CERT": str(self.client_cert),
                "REX_ETCD_KEY": str(self.client_key)}  # fmt: skip


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Tls]]:
    require_etcd()
    work = tmp_path_factory.mktemp("etcd-tls")
    tls = Tls(work)
    url = f"https://127.0.0.1:{free_port()}"
    member = Member("t0", url, f"http://127.0.0.1:{free_port()}", work / "t0",
                    tls=(tls.server_cert, tls.server_key, tls.ca_pem))  # fmt: skip
    cluster = EtcdCluster([member])
    cluster.start()
    try:
        store = EtcdStore([url], tls=_tls(load_config(root=work, environ=tls.env())),
                          retry_for=20)  # fmt: skip
        store.get("ready")  # retried until the member serves (or 20 s)
        store.close()
        yield url, tls
    finally:
        cluster.stop()


def test_the_store_and_a_watch_work_over_tls(tls_etcd: tuple[str, Tls], tmp_path: Path) -> None:
    url, tls = tls_etcd
    config = load_config(root=tmp_path, environ={"REX_ETCD": url, **tls.env()})
    store = open_etcd(config, prefix="/tls-test/")
    try:
        store.commit([], [Put("a", "1")])
        assert store.get("a") is not None
        seen: list[str] = []
        stop, ready = threading.Event(), threading.Event()

        def watch() -> None:
            for update in store.watch("", idle=0.5).updates(stop):
                if update.kind is Kind.RESET:  # read; it streams from the next revision
                    ready.set()
                if update.kind is Kind.CHANGES:
                    seen.extend(e.key for e in update.events)
                    stop.set()

        thread = threading.Thread(target=watch)
        thread.start()
        # the bounds only keep a broken run from hanging: no claim about speed
        assert ready.wait(timeout=60), "the watch did not read the prefix"
        writer = open_etcd(config, prefix="/tls-test/")
        writer.commit([], [Put("b", "2")])
        writer.close()
        thread.join(timeout=60)
        stop.set()
        assert "b" in seen
    finally:
        store.close()


@pytest.mark.parametrize("who", ["no client certificate", "another CA"])
def test_a_missing_or_foreign_certificate_is_refused_at_once(
    tls_etcd: tuple[str, Tls], tmp_path: Path, who: str
) -> None:
    url, tls = tls_etcd
    if who == "no client certificate":
        env = {"REX_ETCD_CA": str(tls.ca_pem)}
    else:
        other = Tls(tmp_path)  # trusts and presents another CA's certificates
        env = other.env()
    store = open_etcd(load_config(root=tmp_path, environ=env), [url])
    sent: list[str] = []
    store.gateway.client.event_hooks["request"].append(lambda req: sent.append(str(req.url)))
    try:
        with pytest.raises(EtcdRejected, match="TLS with etcd") as err:
            store.get("a")
    finally:
        store.close()
    assert err.value.exit_code == 36 and "REX_ETCD_CA" in (err.value.hint or "")
    assert sent == [f"{url}/v3/kv/range"]  # one attempt, not retried: no retry fixes it


def test_half_a_client_certificate_is_a_configuration_error(tls_etcd: tuple[str, Tls]) -> None:
    _url, tls = tls_etcd
    with pytest.raises(ConfigError, match="etcd_cert and etcd_key go together"):
        load_config(environ={"REX_ETCD_CERT": str(tls.client_cert)})


def test_cluster_init_and_join_over_tls_keep_the_settings(
    tls_etcd: tuple[str, Tls], tmp_path: Path
) -> None:
    url, tls = tls_etcd
    root = tmp_path / "h1"
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REX_ROOT": str(root),
            "REX_HOST": "h1", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip

    def rex(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rexcarcer", *args], capture_output=True,
                              text=True, env={**base, **env}, timeout=60, check=False)  # fmt: skip

    done = rex("cluster", "init", "--etcd", url, "--cidr", "203.0.113.0/24", "--no-share-ca",
               env=tls.env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = rex("cluster", "join", "--etcd", url, "--address", "127.0.0.1", env=tls.env())
    assert done.returncode == 0, done.stderr
    conf = (root / "rexcarcer.toml").read_text()
    assert f'etcd_cert = "{tls.client_cert}"' in conf and f'etcd_ca = "{tls.ca_pem}"' in conf
    # later commands read them from the file alone
    listed = rex("-o", "json", "hosts", env={})
    assert listed.returncode == 0 and '"h1"' in listed.stdout, listed.stderr
    # without a client certificate the same command is refused, saying why
    (root / "rexcarcer.toml").write_text(conf.replace("etcd_cert", "#").replace("etcd_key", "#"))
    refused = rex("hosts", env={})
    assert refused.returncode == 36 and "TLS with etcd" in refused.stderr, refused.stderr


def test_share_ca_over_client_tls_lets_a_host_sign_for_itself(
    tls_etcd: tuple[str, Tls], tmp_path: Path
) -> None:
    """`--share-ca` is only allowed here (https and a client certificate): the CA's
    key goes to etcd and a joining host installs it and signs its own certificates."""
    url, tls = tls_etcd
    store = EtcdStore([url], tls=_tls(load_config(root=tmp_path, environ=tls.env())))
    path = os.environ.get("PATH", "/usr/bin:/bin")

    def rex(host: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": path, "REX_ROOT": str(tmp_path / host), "REX_HOST": host,
               "PYTHONDONTWRITEBYTECODE": "1", **tls.env()}  # fmt: skip
        return subprocess.run([sys.executable, "-m", "rexcarcer", *args], capture_output=True,
                              text=True, env=env, timeout=60, check=False)  # fmt: skip

    def wipe() -> None:  # this module's other tests made a cluster in this etcd
        store.commit([], [Delete(e.key) for e in store.list("")])

    wipe()
    try:
        done = rex("h1", "cluster", "init", "--etcd", url, "--share-ca")
        assert done.returncode == 0, done.stderr
        assert "its key is also in etcd" in done.stdout
        record = store.get("cluster/ca")
        assert record is not None and "PRIVATE KEY" in record.value
        done = rex("h2", "cluster", "join", "--etcd", url, "--address", "127.0.0.2")
        assert done.returncode == 0, done.stderr
        assert "certificates: installed from etcd and signed here" in done.stdout, done.stdout
        prints = {json.loads(rex(h, "-o", "json", "ca", "show").stdout)["fingerprint_sha256"]
                  for h in ("h1", "h2")}  # fmt: skip
        assert len(prints) == 1
        assert (tmp_path / "h2" / "ca" / "ca.key").is_file()  # what --share-ca means
    finally:
        wipe()
        store.close()
