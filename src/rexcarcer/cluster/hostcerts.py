"""What the cluster CA signed for each host, in the store, and its revocation.

::

    pki/hosts/<host>       the host's current host certificate: serial, address,
                           validity, the cluster CA's fingerprint, PEM
    pki/jail-cas/<host>    the host's jail CA certificate: serial, key id, validity, PEM
    pki/revoked/<serial>   kind "host" / "jail-ca", issuer: the cluster CA's fingerprint

A new host certificate supersedes (revokes) the one recorded before it; a jail
CA with a new key revokes the old one (a renewal that keeps the key does not:
the jails' certificates chain through either). ``rex cluster leave`` revokes
both in the transaction that removes the host (membership.py), so the agents'
API refuses the host's certificate at its next request (auth.py), and the CA
host signs the cluster CA's CRL (signer.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rexcarcer.model import keys
from rexcarcer.pki.registry import Revoked, revocation
from rexcarcer.state.base import Delete, Op, Put, Store, dumps

if TYPE_CHECKING:
    from cryptography import x509

HOSTS = keys.PKI_HOSTS
JAIL_CAS = keys.PKI_JAIL_CAS


def _describe(cert: x509.Certificate, issuer: str) -> dict[str, Any]:
    from rexcarcer.pki.keys import cert_pem, fingerprint, spki_sha256

    return {
        "serial": format(cert.serial_number, "x"), "fingerprint": fingerprint(cert),
        "key_id": spki_sha256(cert.public_key()), "issuer": issuer,
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "not_after": int(cert.not_valid_after_utc.timestamp()), "pem": cert_pem(cert).decode(),
    }  # fmt: skip


def _revoke(old: dict[str, Any], host: str, reason: str, kind: str, now: float) -> Op:
    rev = Revoked(int(old["serial"], 16), host, reason, int(now), int(old["not_after"]),
                  str(old["issuer"]))  # fmt: skip
    return revocation(rev, kind)


def current(store: Store, host: str) -> dict[str, Any] | None:
    entry = store.get(HOSTS + host)
    return entry.json() if entry else None


def record_ops(
    store: Store, host: str, issuer: str, host_cert: x509.Certificate | None,
    jail_ca: x509.Certificate | None, now: float | None = None,
) -> list[Op]:  # fmt: skip
    """Record what the cluster CA (fingerprint ``issuer``) just signed for ``host``,
    revoking what it supersedes."""
    when = time.time() if now is None else now
    ops: list[Op] = []
    for prefix, cert, kind in ((HOSTS, host_cert, "host"), (JAIL_CAS, jail_ca, "jail-ca")):
        if cert is None:
            continue
        new = _describe(cert, issuer)
        entry = store.get(prefix + host)
        old: dict[str, Any] = entry.json() if entry else {}
        replaced = bool(old) and old.get("serial") != new["serial"]
        if replaced and (kind == "host" or old.get("key_id") != new["key_id"]):
            ops.append(_revoke(old, host, "superseded", kind, when))
        ops.append(Put(prefix + host, dumps({**new, "host": host})))
    return ops


def leave_ops(store: Store, host: str, now: float | None = None) -> list[Op]:
    """Revoke the host's certificate and jail CA, and forget them and its CRL."""
    when = time.time() if now is None else now
    ops: list[Op] = []
    for prefix, kind in ((HOSTS, "host"), (JAIL_CAS, "jail-ca")):
        entry = store.get(prefix + host)
        if entry is not None:
            ops += [_revoke(entry.json(), host, "cessationOfOperation", kind, when),
                    Delete(prefix + host)]  # fmt: skip
    if store.get(keys.PKI_CRLS + host) is not None:
        ops.append(Delete(keys.PKI_CRLS + host))
    return ops
