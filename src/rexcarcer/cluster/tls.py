"""The host's credentials for the agents' mutual-TLS API, from the cluster CA.

The CA is ``$REX_ROOT/ca`` (pki/ca.py): stored in etcd by ``rex cluster
init`` and installed by ``rex cluster join`` (cashare.py), or copied by hand
with ``--no-share-ca``, so that all hosts trust one root. A host's
certificate names ``<host>.host.<zone>`` and the host's cluster address
(serverAuth + clientAuth: the same files serve the agent and ``rex up
--host``). It lives in ``$REX_ROOT/agent-tls/`` and is issued again when the CA
or the address changed, or after ``REISSUE_AFTER``.

Only a certificate naming a registered host *and* that host's address is
accepted (api.py): a jail's certificate, from the same CA, names a jail
address, never a host's.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from rexcarcer.cluster import AgentApiError
from rexcarcer.config import Config
from rexcarcer.fsutil import atomic_write
from rexcarcer.pki.layout import CaPaths

REISSUE_AFTER = 30 * 86400.0  # seconds; the CA's leaf validity is 90 days by default


@dataclass(frozen=True, slots=True)
class TlsFiles:
    key: Path
    cert: Path
    trust: Path
    meta: Path

    @classmethod
    def under(cls, root: Path) -> TlsFiles:
        d = root / "agent-tls"
        return cls(d / "host.key", d / "host.crt", d / "cluster.crt", d / "issued.json")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.trust))
        ctx.load_cert_chain(self.cert, self.key)
        ctx.verify_mode = ssl.CERT_REQUIRED  # no certificate from the CA: no request
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.trust))
        ctx.load_cert_chain(self.cert, self.key)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


def host_dns_name(host: str, zone: str) -> str:
    return f"{host}.host.{zone}"


def _current(files: TlsFiles, ca_fp: str | None, address: str) -> bool:
    try:
        meta = json.loads(files.meta.read_text())
    except (OSError, ValueError):
        return False
    fresh = time.time() - float(meta.get("issued", 0)) < REISSUE_AFTER
    same = meta.get("ca") == ca_fp and meta.get("address") == address
    return fresh and same and files.key.is_file() and files.cert.is_file()


def ensure(config: Config, address: str, *, force: bool = False) -> TlsFiles:
    """This host's API credentials, issued from the local CA when needed."""
    paths = CaPaths.under(config.root)
    files = TlsFiles.under(config.root)
    if not paths.exists():
        raise AgentApiError(
            f"no cluster CA in {paths.dir}: the agents' API needs one shared by all hosts",
            hint="run `rex cluster join` again (it installs the cluster's CA from etcd), "
            "or copy $REX_ROOT/ca from the first host",
        )
    if not force and _current(files, paths.fingerprint(), address):
        return files
    _issue(config, paths, files, address)
    return files


def _issue(config: Config, paths: CaPaths, files: TlsFiles, address: str) -> None:
    import ipaddress

    from rexcarcer.pki import ca, issue
    from rexcarcer.pki.identity import Identity

    authority = ca.load(paths)
    ident = Identity(config.host, (host_dns_name(config.host, config.zone),),
                     (ipaddress.ip_address(address),))  # fmt: skip
    issued = issue.issue(authority, ident, dt.datetime.now(dt.UTC))
    files.key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(files.key, issued.key_pem, 0o600)
    _write(files.cert, issued.host_crt, 0o644)
    _write(files.trust, issued.cluster_crt, 0o644)
    meta = {"ca": authority.fingerprint, "address": address, "issued": time.time()}
    _write(files.meta, json.dumps(meta).encode(), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        raise AgentApiError(f"cannot write {path}: {exc}") from exc
