"""Who signs an export, and whose signature an import accepts.

An export is signed with the exporting host's key (``$REX_ROOT/agent-tls/
host.key``; signatures as ``openssl dgst -sha256 -sign`` makes them, base/sign.py)
and carries the host's certificate chain. A single host that holds its own
CA issues itself that certificate the first time (cluster/tls.py ``ensure``);
a cluster member has the one the CA host signed at ``rex cluster join``.

An import accepts a signature when, in this order:

1. it verifies over the manifest with the chain's first certificate;
2. that certificate is trusted: its fingerprint is in the ``rex trust``
   directory (trusted as it is), or it chains, certificate by certificate
   (each signed by the next, valid now, a CA), to an anchor: this host's
   cluster root (``cluster.crt`` under agent-tls/, jail-ca/ or ca/) or a CA
   certificate ``rex trust add`` added (another cluster's root, say);
3. it is a *host* certificate (pki/roles.py ``host_of``: signed by the
   cluster CA itself, with the host-role policy, naming ``<host>.host.<zone>``
   of the host the manifest names): a jail's certificate, which chains to the
   same root through its host's jail CA, signs no export;
4. it is not revoked, when this host can see the cluster's revocations.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rexcarcer.config import Config
from rexcarcer.state.base import Store
from rexcarcer.transfer import ArchiveRejected, TransferError
from rexcarcer.transfer.archive import Header
from rexcarcer.transfer.manifest import Manifest, parse

if TYPE_CHECKING:
    from cryptography import x509

    from rexcarcer.base.sign import PrivateKey

MAX_CHAIN = 8


@dataclass(frozen=True, slots=True)
class HostKey:
    key: PrivateKey
    chain: bytes  # PEM, the host's certificate first


def host_key(config: Config, store: Store | None) -> HostKey:
    """This host's key and certificate chain, issued here when this host holds
    the cluster CA and has none yet."""
    from rexcarcer.base import sign
    from rexcarcer.cluster import AgentApiError, tls
    from rexcarcer.pki.layout import CaPaths

    if not config.etcd and not CaPaths.under(config.root).exists():
        raise TransferError(
            "this host has no certificate to sign the export with",
            hint="`rex ca init` makes this host's CA (the first `rex up` makes one too)",
        )
    try:
        files = tls.ensure(config, _address(config, store), store=store if config.etcd else None)
        key = sign.load_private_key(sign.read_file(files.key, "host key"), str(files.key))
        chain = sign.read_file(files.cert, "host certificate")
    except AgentApiError as exc:
        raise TransferError(f"cannot sign the export: {exc.message}", hint=exc.hint) from exc
    return HostKey(key, chain)


def _address(config: Config, store: Store | None) -> str:
    if config.etcd and store is not None:
        from rexcarcer.cluster import model

        entry = store.get(model.host_key(config.host))
        if entry is not None:
            return str(entry.json()["address"])
    return str(config.host_address)


def sign(key: HostKey, manifest: Manifest) -> Header:
    from rexcarcer.base import sign as signing

    data = manifest.encode()
    return Header(data, signing.sign(data, key.key), key.chain)


def anchors(config: Config) -> tuple[list[x509.Certificate], set[str]]:
    """(CA certificates an export may chain to, fingerprints trusted as they are)."""
    from cryptography import x509

    from rexcarcer.base.sign import fingerprint
    from rexcarcer.base.trust import TrustStore, trust_dir
    from rexcarcer.cluster.tls import TlsFiles
    from rexcarcer.pki.layout import CaPaths, JailCaPaths

    out: list[x509.Certificate] = []
    root = config.root
    for path in (TlsFiles.under(root).trust, JailCaPaths.under(root).trust,
                 CaPaths.under(root).trust):  # fmt: skip
        try:
            out += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue
    store = TrustStore(trust_dir(root))
    direct = set(store.fingerprints())
    for fp in direct:
        cert = store.get(fp)
        if cert is not None:
            out.append(cert)
    unique = {fingerprint(c): c for c in out}
    return list(unique.values()), direct


def verify(header: Header, config: Config, store: Store | None) -> Manifest:
    """The manifest of an export whose signature this host accepts (see above)."""
    from cryptography import x509

    from rexcarcer.base import sign as signing

    try:
        chain = x509.load_pem_x509_certificates(header.chain)
    except ValueError as exc:
        raise ArchiveRejected(
            "the export carries no readable signer certificate",
            hint="rex import reads the files `rex export` writes",
        ) from exc
    if not 0 < len(chain) <= MAX_CHAIN:
        raise ArchiveRejected(f"the export carries {len(chain)} signer certificates")
    leaf = chain[0]
    who = signing.describe(leaf)
    if not signing.verify(header.manifest, header.signature, leaf):
        raise ArchiveRejected(
            f"the export's signature by {who.subject} does not verify: its manifest was "
            "altered", hint="nothing was received; get an intact copy of the export")  # fmt: skip
    manifest = parse(header.manifest)
    now = dt.datetime.now(dt.UTC)
    found, direct = anchors(config)
    if who.fingerprint in direct:
        signing.check_validity(who, now)
    else:
        _chain(leaf, chain[1:], found, manifest, now)
    if store is not None:
        from rexcarcer.pki import registry

        if registry.is_revoked(store, leaf.serial_number):
            raise ArchiveRejected(
                f"the export is signed with {who.subject}'s certificate, which the cluster "
                "revoked (the host left the cluster, or its certificate was replaced)",
                hint="export the jail again on a current member of the cluster",
            )
    return manifest


def _chain(
    leaf: x509.Certificate, given: list[x509.Certificate], found: list[x509.Certificate],
    manifest: Manifest, now: dt.datetime,
) -> None:  # fmt: skip
    from rexcarcer.base.sign import describe, fingerprint
    from rexcarcer.pki import roles

    subject = describe(leaf).subject
    pool = given + found
    roots = {fingerprint(c) for c in found}
    issuer = _issuer_of(leaf, pool, now)
    if issuer is None:
        raise _foreign(subject)
    role = roles.host_of(leaf, issuer, manifest.zone, now)
    if role is None or role[0] != manifest.host:
        raise ArchiveRejected(
            f"the export is signed with the certificate of {subject}, which is not the "
            f"host certificate of {manifest.host} (a jail's certificate signs no export)",
            hint="exports are made by `rex export` on a host of the cluster",
        )
    cert = issuer
    for _ in range(MAX_CHAIN):
        if fingerprint(cert) in roots:
            return
        above = _issuer_of(cert, pool, now)
        if above is None:
            raise _foreign(subject)
        cert = above
    raise _foreign(subject)


def _issuer_of(
    cert: x509.Certificate, pool: list[x509.Certificate], now: dt.datetime
) -> x509.Certificate | None:
    """The CA of ``pool`` that signed ``cert`` and is valid now, if any."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    for ca in pool:
        if ca.subject != cert.issuer or not ca.not_valid_before_utc <= now < ca.not_valid_after_utc:
            continue
        try:
            bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
            cert.verify_directly_issued_by(ca)
        except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
            continue
        if bc.ca:
            return ca
    return None


def _foreign(subject: str) -> ArchiveRejected:
    return ArchiveRejected(
        f"the export is signed by {subject}, whose certificate does not chain to this "
        "host's cluster CA nor to a CA certificate `rex trust` lists",
        hint="if you trust the exporting host's cluster, add its root once: `rex trust add "
        "CLUSTER.crt` (its $REX_ROOT/agent-tls/cluster.crt)",
    )
