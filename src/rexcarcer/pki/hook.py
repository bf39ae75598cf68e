"""The identity ``JailHook``: a TLS key and certificate in every jail.

Before a jail starts (``rex up``, ``rex start``) rex makes sure it holds a good
identity in ``/etc/ssl/rc``::

    host.key     0600, root: the jail's private key, generated in this run
    host.crt     the jail's certificate, then the CA certificates below the root
    cluster.crt  the root to trust: verify peers against it

and issues a new one when there is none, when the CA, the jail's names or its
address changed, when the files are missing or replaced, or when the certificate
is in the last third of its validity. ``rex destroy`` revokes it.

Jail certificates are signed by this host's jail CA (pki/jailca.py), never by
the cluster CA itself: that one signs only hosts and jail CAs (pki/roles.py).
On a host that holds the cluster CA the jail CA is made (and renewed) here;
a cluster member gets its jail CA at ``rex cluster join`` and never makes a CA
of its own. A single host without a CA creates one at its first jail (``rex ca
init`` with its defaults), so that every jail has an identity; run ``rex ca
init`` first to choose the name, the validity or a user-supplied intermediate.

Every revocation signs this host's jail CRL with the jail CA, writes it to
``$REX_ROOT/jail-ca/crl.pem`` and publishes it in the store (``pki/crls/<host>``).

Import cost: this module is imported at every CLI start (engine/base.py), and
``cryptography`` (about 60 ms) only when a certificate is issued, a key file rex
did not leave there is checked, or a revocation signs a CRL: a start with a
good certificate decides so from the store, ca.json and two stat/reads.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from rexcarcer.pki.certrecord import CERT, KEY, SSL_DIR, TRUST

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rexcarcer.host import Host
    from rexcarcer.model.jail import JailRecord
    from rexcarcer.model.recordprop import RebuiltJail
    from rexcarcer.pki.ca import Ca
    from rexcarcer.pki.identity import Identity, OnDisk
    from rexcarcer.pki.issue import Issued
    from rexcarcer.pki.layout import CaPaths, JailCaPaths
    from rexcarcer.runtime.base import JailSpec


class IdentityHook:
    name = "identity"

    def prepare(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        ensure_identity(host, rec, spec)

    def started(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        pass

    def stopped(self, host: Host, rec: JailRecord) -> None:
        pass

    def destroyed(self, host: Host, rec: JailRecord) -> None:
        revoke(host, rec.name, "cessationOfOperation")

    def rebuilt(self, host: Host, jails: Sequence[RebuiltJail]) -> list[tuple[str, str]]:
        from rexcarcer.pki.rebuild import rebuild_registry

        return rebuild_registry(host, jails)


def ca_paths(host: Host) -> CaPaths:
    from rexcarcer.pki.layout import CaPaths

    return CaPaths.under(host.config.root)


def jail_ca_paths(host: Host) -> JailCaPaths:
    from rexcarcer.pki.layout import JailCaPaths

    return JailCaPaths.under(host.config.root)


def ensure_issuer(host: Host) -> Ca:
    """This host's jail CA, made or renewed here when this host holds the cluster
    CA; a single host without any CA creates one first. A cluster member never
    makes a CA: its jail CA comes from the CA host (``rex cluster join``)."""
    from rexcarcer.pki import PkiError, ca, jailca

    config = host.config
    jpaths, rpaths = jail_ca_paths(host), ca_paths(host)
    with host.lock("ca"):
        now = ca.utcnow()
        root_fp = rpaths.fingerprint() if rpaths.exists() else None
        declared = [r.network for r in config.public_ips]
        why = jailca.problem(jpaths, config.subnet, root_fp, now, declared)
        if why is None and (root_fp is None or not jailca.is_due(jpaths, now)):
            return jailca.load(jpaths)
        if root_fp is None:
            if config.etcd:
                raise PkiError(
                    f"cannot issue jail certificates: {why}",
                    hint="this cluster host gets its jail CA from the CA host: run `rex cluster "
                    "renew` (it asks for the public ranges declared in public_ips), or `rex "
                    "cluster join --token T` with a token from `rex cluster token` on the CA host",
                )
            host.progress.step(f"Creating the cluster CA in {rpaths.dir} (see `rex ca show`)")
            ca.install(rpaths, ca.self_signed(ca.CaSettings(), now), now=now)
        root = ca.load(rpaths)
        public = jailca.public_ranges(jpaths) if jpaths.exists() else ca.public_ranges(rpaths)
        public = sorted({*public, *declared}, key=str)  # the declared ones are always in
        host.progress.step(f"Making this host's jail CA in {jpaths.dir}: "
                           f"{why or 'it is in the last third of its validity'}")  # fmt: skip
        return jailca.make_local(root, jpaths, host=config.host, zone=config.zone,
                                 subnet=config.subnet, public=public, now=now,
                                 keep_key=why is None)  # fmt: skip


def ensure_identity(
    host: Host, rec: JailRecord, spec: JailSpec, *, force: bool = False
) -> str | None:
    """Issue and install the jail's identity if it needs one; returns why, or None."""
    from rexcarcer.pki import identity, registry

    name = rec.name
    ident = identity.identity_for(rec, host.config.zone)  # bad names fail before a CA is made
    stored = registry.current(host.store, name)
    if not force and _still_good(host, spec, stored, ident):
        return None  # the normal case at a start: no cryptography imported
    from rexcarcer.pki import issue

    authority = ensure_issuer(host)
    now = dt.datetime.now(dt.UTC)
    why = "renewal was asked for" if force else identity.renewal_reason(
        stored, ident, issuer_id(authority), on_disk(spec, stored), now
    )  # fmt: skip
    if why is None:
        _note_key_file(host, spec, stored)  # e.g. touched: check it cheaply next time
        return None
    host.progress.step(f"Issuing a certificate for {name}: {why}")
    issued = issue.issue(authority, ident, now)
    new = _record(issued, ident, authority)
    superseded = registry.record_issued(host.store, name, new, now.timestamp())
    install(spec, issued)
    trust(host, spec, issued.cluster_crt)
    _note_key_file(host, spec, new)
    if superseded is not None:
        refresh_crl(host, authority, now)
    return why


def _still_good(host: Host, spec: JailSpec, stored: dict[str, Any] | None, ident: Identity) -> bool:
    """The full check without cryptography: the CA's fingerprint from ca.json, the
    certificate compared byte for byte, the key file by its inode, size and mtime
    as rex left it (any other key file gets the full check)."""
    from rexcarcer.pki import identity

    jpaths, rpaths = jail_ca_paths(host), ca_paths(host)
    key_id, meta = jpaths.key_id(), jpaths.settings()
    if stored is None or key_id is None:
        return False
    if rpaths.exists() and meta.get("root") != rpaths.fingerprint():
        return False  # `rex ca init --force`: the jail CA is made again, then the jails
    if dt.datetime.now(dt.UTC).timestamp() >= int(meta.get("not_after", 0)):
        return False
    disk = identity.OnDisk(_cert_in_jail(spec, stored), stored.get("key_file") == _key_file(spec))
    now = dt.datetime.now(dt.UTC)
    return identity.renewal_reason(stored, ident, key_id, disk, now) is None


def _cert_in_jail(spec: JailSpec, stored: dict[str, Any]) -> bool:
    from rexcarcer.jailfs import read_small

    crt = read_small(spec.root, f"{SSL_DIR}/{CERT}")
    return crt is not None and crt.startswith(str(stored.get("pem", "")).encode())


def _key_file(spec: JailSpec) -> list[int] | None:
    from rexcarcer.pki.certrecord import key_file

    return key_file(spec.root)


def _note_key_file(host: Host, spec: JailSpec, stored: dict[str, Any] | None) -> None:
    from rexcarcer.pki import registry

    key_file = _key_file(spec)
    if stored is not None and stored.get("key_file") != key_file:
        registry.record_issued(host.store, spec.name, {**stored, "key_file": key_file})


def _record(issued: Issued, ident: Identity, authority: Ca) -> dict[str, Any]:
    from rexcarcer.pki.certrecord import cert_record

    return cert_record(issued.cert, ident, issuer_id(authority))


def on_disk(spec: JailSpec, stored: dict[str, Any] | None) -> OnDisk:
    """Whether the jail still holds the certificate rex recorded, and its key."""
    from cryptography.hazmat.primitives import serialization

    from rexcarcer.jailfs import read_small
    from rexcarcer.pki.identity import OnDisk
    from rexcarcer.pki.keys import spki_sha256

    if stored is None:
        return OnDisk(False, False)
    key_data = read_small(spec.root, f"{SSL_DIR}/{KEY}")
    key_ok = False
    if key_data is not None:
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
            key_ok = spki_sha256(key) == stored.get("spki")  # type: ignore[arg-type]
        except (ValueError, TypeError):
            key_ok = False
    return OnDisk(_cert_in_jail(spec, stored), key_ok)


def install(spec: JailSpec, issued: Issued) -> None:
    from rexcarcer.jailfs import replace_files
    from rexcarcer.pki import PkiError

    entries = [
        (KEY, issued.key_pem, 0o600),
        (CERT, issued.host_crt, 0o644),
        (TRUST, issued.cluster_crt, 0o644),
    ]
    try:
        replace_files(spec.root, SSL_DIR, entries)
    except OSError as exc:
        raise PkiError(f"cannot write the identity of {spec.name} into {SSL_DIR}: {exc}") from exc


def trust(host: Host, spec: JailSpec, ca_pem: bytes) -> None:
    """The jail's TLS library trusts the cluster CA too (the platform knows where)."""
    from rexcarcer.pki import PkiError

    try:
        host.platform.install_trust(spec.root, ca_pem)
    except OSError as exc:
        raise PkiError(
            f"cannot add the cluster CA to the trust store of {spec.name}: {exc}"
        ) from exc


def issuer_id(authority: Ca) -> str:
    """What a jail certificate records as its issuer: the jail CA's key, which a
    renewal of the jail CA's certificate keeps (pki/layout.JailCaPaths.key_id)."""
    from rexcarcer.pki.keys import spki_sha256

    return spki_sha256(authority.key)


def revoke(host: Host, name: str, reason: str) -> str | None:
    """Revoke the jail's certificate (idempotent); refresh the CRL when one was."""
    from rexcarcer.pki import registry

    serial = registry.revoke(host.store, name, reason)
    paths = jail_ca_paths(host)
    if serial is not None and paths.exists():
        from rexcarcer.pki import ca, jailca

        refresh_crl(host, jailca.load(paths), ca.utcnow())
    return serial


def refresh_crl(host: Host, authority: Ca, now: dt.datetime, days: int = 7) -> bytes:
    """Sign this host's jail CRL, write it beside the jail CA and publish it in the
    store, where every host (and anyone checking a jail) reads it."""
    from rexcarcer.pki import crl, registry
    from rexcarcer.state.base import put_json

    entries = registry.revoked(host.store, issuer_id(authority), now.timestamp())
    data = crl.pem(crl.build(authority, entries, now, days))
    crl.write(jail_ca_paths(host).crl, data)
    put_json(host.store, crl.store_key(host.config.host), crl.record(data, authority, now))
    return data
