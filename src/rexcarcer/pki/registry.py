"""Issued and revoked jail certificates, in the state store. No cryptography here.

::

    pki/certs/<jail>       the jail's current certificate: serial, fingerprint,
                           issuer (the CA's fingerprint), identity, validity, PEM
    pki/revoked/<serial>   a revoked serial: jail, reason, when, until when it
                           matters (the certificate's notAfter), issuer; with
                           ``kind`` "host" or "jail-ca" (``jail`` then names the
                           host) for what the cluster CA signed (cluster/)

A renewal records the new certificate and revokes the one it supersedes in one
compare-and-swap transaction; ``rex destroy`` revokes with "cessationOfOperation".
The private key is never recorded: it exists only in the jail.

A certificate the cluster CA signed (a host's, a jail CA) is revoked with
``revocation``; the agents' API refuses a revoked serial at its next request
(cluster/auth.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rexcarcer.errors import StateError
from rexcarcer.model import keys
from rexcarcer.state.base import Compare, Delete, Op, Put, Store, dumps

CERTS = keys.PKI_CERTS
REVOKED = keys.PKI_REVOKED
RETRIES = 20


@dataclass(frozen=True, slots=True)
class Revoked:
    serial: int
    jail: str
    reason: str  # an x509.ReasonFlags value: superseded, cessationOfOperation, ...
    revoked_at: int  # epoch seconds
    not_after: int
    issuer: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Revoked:
        return cls(
            int(data["serial"], 16),
            str(data["jail"]),
            str(data["reason"]),
            int(data["revoked_at"]),
            int(data["not_after"]),
            str(data["issuer"]),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "serial": format(self.serial, "x"), "jail": self.jail, "reason": self.reason,
            "revoked_at": self.revoked_at, "not_after": self.not_after, "issuer": self.issuer,
        }  # fmt: skip


def current(store: Store, jail: str) -> dict[str, Any] | None:
    entry = store.get(CERTS + jail)
    return entry.json() if entry else None


def _revocation(old: dict[str, Any], reason: str, now: float) -> Put:
    rev = Revoked(
        int(old["serial"], 16),
        str(old["jail"]),
        reason,
        int(now),
        int(old["not_after"]),
        str(old["issuer"]),
    )
    return Put(REVOKED + old["serial"], dumps(rev.as_json()))


def revocation(rev: Revoked, kind: str) -> Put:
    """The store operation that revokes a certificate the cluster CA signed
    (``kind``: "host", "jail-ca"); ``rev.jail`` names the host."""
    return Put(REVOKED + format(rev.serial, "x"), dumps({**rev.as_json(), "kind": kind}))


def is_revoked(store: Store, serial: int) -> bool:
    return store.get(REVOKED + format(serial, "x")) is not None


def _swap(store: Store, jail: str, make: Any) -> dict[str, Any] | None:
    """Apply ``make(old record or None) -> ops`` to ``pki/certs/<jail>`` atomically."""
    key = CERTS + jail
    for _ in range(RETRIES):
        entry = store.get(key)
        old = entry.json() if entry else None
        ops: list[Op] = make(old)
        if not ops or store.commit([Compare(key, entry.revision if entry else None)], ops):
            return old
    raise StateError(
        f"the certificate record of {jail} keeps changing under this rex run",
        hint="is another rex run renewing it? try again",
    )


def record_issued(
    store: Store, jail: str, rec: dict[str, Any], now: float | None = None
) -> str | None:
    """Make ``rec`` the jail's certificate; revoke the one it replaces (superseded)
    and return that one's serial."""
    when = time.time() if now is None else now

    def ops(old: dict[str, Any] | None) -> list[Op]:
        out: list[Op] = [Put(CERTS + jail, dumps(rec))]
        if old is not None and old.get("serial") != rec["serial"]:
            out.append(_revocation(old, "superseded", when))
        return out

    old = _swap(store, jail, ops)
    return None if old is None or old.get("serial") == rec["serial"] else str(old["serial"])


def revoke(store: Store, jail: str, reason: str, now: float | None = None) -> str | None:
    """Revoke the jail's certificate and forget it; the revoked serial, or None."""
    when = time.time() if now is None else now

    def ops(old: dict[str, Any] | None) -> list[Op]:
        return [] if old is None else [Delete(CERTS + jail), _revocation(old, reason, when)]

    old = _swap(store, jail, ops)
    return None if old is None else str(old["serial"])


def revoked(store: Store, issuer: str, now: float | None = None) -> list[Revoked]:
    """The revocations a CRL of ``issuer`` lists: those of certificates not yet expired."""
    when = time.time() if now is None else now
    out = [Revoked.from_json(e.json()) for e in store.list(REVOKED)]
    return [r for r in out if r.issuer == issuer and r.not_after > when]


def issued(store: Store) -> list[dict[str, Any]]:
    return [e.json() for e in store.list(CERTS)]
