"""The host's credentials for the agents' mutual-TLS API: its host certificate.

A host certificate is signed by the cluster CA itself and carries the host-role
policy (pki/roles.py); it names ``<host>.host.<zone>`` and the host's cluster
address (serverAuth + clientAuth: the same files serve the agent and ``rex up
--host``). It lives in ``$REX_ROOT/agent-tls/`` (key 0600, made on this host).

Where it comes from:

- on a host that holds the cluster CA's key (the CA host, or every host of a
  ``--share-ca`` cluster) it is issued here, again when the address or the CA
  changes and in the last third of its validity (``ensure``);
- on any other host, the CA host signs it: ``rex cluster join --token`` and
  ``rex cluster renew`` send a request through etcd (enroll.py), and the agent
  renews it before it expires. ``ensure`` then only checks it.

Only such a certificate is served by the API (auth.py): a jail's certificate
comes from its host's jail CA, one level below, whatever it names.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rexcarcer.cluster import AgentApiError
from rexcarcer.config import Config
from rexcarcer.fsutil import atomic_write
from rexcarcer.pki.layout import CaPaths
from rexcarcer.state.base import Store

RENEW_FRACTION = 2 / 3  # as for jails: renewed in the last third


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

    def settings(self) -> dict[str, Any]:
        try:
            value = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def present(self) -> bool:
        return self.key.is_file() and self.cert.is_file() and self.trust.is_file()


def host_dns_name(host: str, zone: str) -> str:
    return f"{host}.host.{zone}"


def due(files: TlsFiles, now: float | None = None) -> bool:
    """In the last third of its validity, or expired (cheap: issued.json)."""
    meta = files.settings()
    start, end = float(meta.get("not_before", 0)), float(meta.get("not_after", 0))
    return (time.time() if now is None else now) >= start + (end - start) * RENEW_FRACTION


def current(files: TlsFiles, ca_fp: str | None, address: str) -> bool:
    """Issued by the CA ``ca_fp`` for ``address``, present, and not due."""
    meta = files.settings()
    same = meta.get("ca") == ca_fp and meta.get("address") == address
    return same and files.present() and not due(files)


def ensure(
    config: Config, address: str, *, force: bool = False, store: Store | None = None
) -> TlsFiles:
    """This host's API credentials: issued here when this host holds the cluster
    CA (recorded in ``store`` when given), else the ones the CA host signed."""
    paths = CaPaths.under(config.root)
    files = TlsFiles.under(config.root)
    if paths.exists():
        if force or not current(files, paths.fingerprint(), address):
            issue_local(config, paths, files, address, store)
        return files
    meta = files.settings()
    if not files.present():
        raise AgentApiError(
            f"this host has no host certificate in {files.cert.parent}",
            hint="run `rex cluster join --token T` with a token from `rex cluster token` "
            "on the CA host",
        )
    if meta.get("address") != address:
        raise AgentApiError(
            f"this host's certificate names {meta.get('address')}, and its cluster address "
            f"is {address}",
            hint="run `rex cluster renew` (the CA host's agent signs a new one)",
        )
    if time.time() >= float(meta.get("not_after", 0)):
        raise AgentApiError("this host's certificate expired",
                            hint="run `rex cluster renew`")  # fmt: skip
    return files


def install(
    files: TlsFiles, key_pem: bytes | None, cert_pem: bytes, trust_pem: bytes,
    meta: dict[str, Any],
) -> None:  # fmt: skip
    """Write the credentials; ``key_pem`` None keeps the key on disk."""
    try:
        files.key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if key_pem is not None:
            atomic_write(files.key, key_pem, mode=0o600)
        atomic_write(files.cert, cert_pem, mode=0o644)
        atomic_write(files.trust, trust_pem, mode=0o644)
        atomic_write(files.meta, json.dumps(meta).encode(), mode=0o644)
    except OSError as exc:
        raise AgentApiError(f"cannot write {files.cert.parent}: {exc}") from exc


def meta_of(cert: Any, ca_fp: str, address: str) -> dict[str, Any]:
    """issued.json for host certificate ``cert`` (an x509.Certificate)."""
    return {
        "ca": ca_fp, "address": address, "issued": time.time(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.timestamp(),
        "not_after": cert.not_valid_after_utc.timestamp(),
    }  # fmt: skip


def issue_local(
    config: Config, paths: CaPaths, files: TlsFiles, address: str, store: Store | None
) -> None:
    """Sign this host's certificate with the cluster CA held here."""
    import ipaddress

    from rexcarcer.cluster import hostcerts
    from rexcarcer.pki import ca, jailca, roles
    from rexcarcer.pki.keys import KeyType, cert_pem, generate, key_pem

    authority = ca.load(paths)
    key = generate(KeyType.ECDSA_P256)
    now = dt.datetime.now(dt.UTC)
    cert = roles.host_certificate(authority, key.public_key(), config.host, config.zone,
                                  ipaddress.ip_address(address), now)  # fmt: skip
    chain = b"".join(cert_pem(c) for c in jailca.chain_above(authority))
    install(files, key_pem(key), cert_pem(cert) + chain, authority.trust_pem(),
            meta_of(cert, authority.fingerprint, address))  # fmt: skip
    if store is not None:
        ops = hostcerts.record_ops(store, config.host, authority.fingerprint, cert, None)
        store.commit([], ops)
