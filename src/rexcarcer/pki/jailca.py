"""This host's jail CA (``$REX_ROOT/jail-ca/``, pki/layout.py): the intermediate
that signs the certificates of this host's jails and their CRL.

Its key is made on this host and never leaves it. Its certificate is signed by
the cluster CA (pki/roles.py): here, when this host holds the cluster CA's key
(the CA host, a single host, a host of a ``--share-ca`` cluster), else by the
CA host through a request in etcd (cluster/enroll.py). A renewal keeps the key,
so the jails' certificates stay valid under the renewed certificate and jail
certificate records keep their issuer (the key's SHA-256).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from rexcarcer.fsutil import atomic_write
from rexcarcer.pki import PkiError, roles
from rexcarcer.pki.ca import DEFAULT_LEAF_DAYS, Ca
from rexcarcer.pki.keys import (
    KeyType,
    SigningKey,
    cert_pem,
    fingerprint,
    generate,
    key_pem,
    load_certificates,
    load_private_key,
    spki,
    spki_sha256,
)
from rexcarcer.pki.layout import JailCaPaths

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def install(
    paths: JailCaPaths, key: SigningKey | None, cert: x509.Certificate,
    chain: Sequence[x509.Certificate], trust: Sequence[x509.Certificate], *, host: str,
    root: str, public: Sequence[Network] = (), leaf_days: int = DEFAULT_LEAF_DAYS,
) -> None:  # fmt: skip
    """Write the jail CA: a new ``key`` (None: keep the one on disk), its certificate,
    the certificates above it and the root; jail-ca.json last (it marks it complete).
    ``root`` is the fingerprint of the cluster CA that signed it."""
    current = key if key is not None else load_private_key(paths.key)
    if spki(cert.public_key()) != spki(current):
        raise PkiError(
            f"the jail CA certificate does not belong to the key in {paths.key}",
            hint="run `rex cluster join` again",
        )
    permitted = _permitted(cert)
    meta = {
        "version": 1, "host": host, "key_id": spki_sha256(current), "root": root,
        "fingerprint": fingerprint(cert), "permitted": [str(n) for n in permitted],
        "public": [str(n) for n in public], "leaf_days": leaf_days,
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "not_after": int(cert.not_valid_after_utc.timestamp()),
    }  # fmt: skip
    try:
        paths.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.dir.chmod(0o700)
        if key is not None:
            atomic_write(paths.key, key_pem(key), mode=0o600)
        atomic_write(paths.cert, cert_pem(cert), mode=0o644)
        atomic_write(paths.chain, b"".join(cert_pem(c) for c in chain), mode=0o644)
        atomic_write(paths.trust, b"".join(cert_pem(c) for c in trust), mode=0o644)
        atomic_write(paths.meta, json.dumps(meta, indent=2).encode() + b"\n", mode=0o644)
    except OSError as exc:
        raise PkiError(f"cannot write the jail CA into {paths.dir}: {exc}") from exc


def _permitted(cert: x509.Certificate) -> list[Network]:
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    return [n.value for n in nc.permitted_subtrees or () if isinstance(n, x509.IPAddress)
            and isinstance(n.value, ipaddress.IPv4Network | ipaddress.IPv6Network)]  # fmt: skip


def load(paths: JailCaPaths) -> Ca:
    """The jail CA as an issuer: jails' ``host.crt`` gets it and the chain above it."""
    if not paths.exists():
        raise PkiError(
            f"this host has no jail CA in {paths.dir}",
            hint="run `rex cluster join` (it makes one), or `rex ca init` on a single host",
        )
    key = load_private_key(paths.key)
    cert = load_certificates(paths.cert, "jail CA certificate")[0]
    chain = tuple(load_certificates(paths.chain, "chain")) if paths.chain.stat().st_size else ()
    trust = tuple(load_certificates(paths.trust, "trust anchor"))
    if spki(cert.public_key()) != spki(key):
        raise PkiError(f"{paths.key} does not belong to {paths.cert}",
                       hint="run `rex cluster join` again")  # fmt: skip
    days = int(paths.settings().get("leaf_days", DEFAULT_LEAF_DAYS))
    return Ca(key, cert, chain, trust, "jail", days)


def problem(
    paths: JailCaPaths,
    subnet: Network,
    root: str | None,
    now: dt.datetime,
    public: Sequence[Network] = (),
) -> str | None:
    """Why this host's jail CA cannot sign now, or None. ``root``: the fingerprint of
    the cluster CA on this host, if it holds one; ``public``: the ranges declared
    for jails on this host (config ``public_ips``), which it must cover too."""
    meta = paths.settings()
    if not paths.exists():
        return "this host has no jail CA yet"
    if root is not None and meta.get("root") != root:
        return "the cluster CA changed"
    permitted = [ipaddress.ip_network(n) for n in meta.get("permitted", [])]
    if not any(subnet.version == n.version and subnet.subnet_of(n) for n in permitted):  # type: ignore[arg-type]
        return f"the jail subnet {subnet} is not among the jail CA's addresses"
    for net in public:
        if not any(net.version == n.version and net.subnet_of(n) for n in permitted):  # type: ignore[arg-type]
            return f"the public range {net} declared for jails is not among the jail CA's addresses"
    if now.timestamp() >= int(meta.get("not_after", 0)):
        return "the jail CA expired"
    return None


def is_due(paths: JailCaPaths, now: dt.datetime) -> bool:
    """In the last third of its validity (from jail-ca.json: no cryptography)."""
    meta = paths.settings()
    start, end = int(meta.get("not_before", 0)), int(meta.get("not_after", 0))
    return now.timestamp() >= start + (end - start) * roles.RENEW_FRACTION


def public_ranges(paths: JailCaPaths) -> list[Network]:
    return [ipaddress.ip_network(n) for n in paths.settings().get("public", [])]


def make_local(
    root: Ca, paths: JailCaPaths, *, host: str, zone: str, subnet: Network,
    public: Sequence[Network], now: dt.datetime, keep_key: bool = False,
) -> Ca:  # fmt: skip
    """Make (or renew, ``keep_key``) this host's jail CA with the cluster CA ``root``
    held here."""
    keep = keep_key and paths.key.is_file()
    key: SigningKey | None = None if keep else generate(KeyType.ECDSA_P256)
    public_key = (key or load_private_key(paths.key)).public_key()
    permitted, excluded = roles.jail_ca_constraints(subnet, public)
    cert = roles.jail_ca_certificate(root, public_key, host, zone, permitted, excluded, now)
    install(paths, key, cert, chain_above(root), root.trust, host=host, root=root.fingerprint,
            public=public, leaf_days=root.leaf_days)  # fmt: skip
    return load(paths)


def chain_above(root: Ca) -> tuple[x509.Certificate, ...]:
    """What sits between a certificate the cluster CA signs and the trust anchor:
    nothing under rex's own root, your intermediate(s) under yours."""
    return tuple(c for c in (root.cert, *root.chain) if c not in root.trust)


def describe(paths: JailCaPaths) -> dict[str, Any]:
    meta = paths.settings()
    cert = load_certificates(paths.cert, "jail CA certificate")[0]
    return {
        "subject": cert.subject.rfc4514_string(), "fingerprint_sha256": fingerprint(cert),
        "not_after": cert.not_valid_after_utc.isoformat(), "key_id": meta.get("key_id"),
        "permitted": meta.get("permitted", []), "directory": str(paths.dir),
    }  # fmt: skip


def describe_cluster_ca(paths: JailCaPaths) -> dict[str, Any]:
    """``rex ca show`` on a cluster member: the cluster CA as its jail CA knows it
    (the certificate that signed it, its root), without the CA's key."""
    from rexcarcer.pki.ca import describe_cert

    chain = load_certificates(paths.chain, "chain") if paths.chain.stat().st_size else []
    trust = load_certificates(paths.trust, "trust anchor")
    out = describe_cert((chain or trust)[0])
    out.update(
        mode="cluster member (the CA's key is on the CA host)",
        jail_certificate_days=int(paths.settings().get("leaf_days", DEFAULT_LEAF_DAYS)),
        directory=str(paths.dir), chain=[c.subject.rfc4514_string() for c in chain[1:]],
        trust_anchor=[describe_cert(c) for c in trust],
    )  # fmt: skip
    return out
