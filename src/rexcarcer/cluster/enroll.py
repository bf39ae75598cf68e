"""A host's certificates, signed by the CA host through etcd (the host's side;
signer.py is the CA host's).

::

    joining host                                  CA host's agent (signer.py)
    makes its host key and jail CA key (0600,
    here only) and a CSR for each
    join/<id> = {kind "join", host, address,  ->  checks the token (known, unused,
      public ranges, CSRs, token id, expiry,      not expired) and the MAC, the
      nonce, mac = HMAC(token, request)}          host's registration; signs the
                                                  host certificate and the jail CA
                                                  from its own records; consumes
    checks the answer's MAC and that the      <-  the token; join/<id>/answer =
    certificates are for its keys, name and       {certificates, CA certificates, mac}
    address, from the cluster CA; installs them

A renewal is the same exchange with ``kind "renew"``: no token, the request is
signed with the host's current key and carries its current certificate, which
the CA host checks like the agents' API does (auth.py). The jail CA keeps its
key. The request and its answer are deleted once read.

Keys never leave the host, and are written only once the certificates arrive:
an interrupted join leaves nothing (and, if the CA host had answered, a used
token: make another).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rexcarcer.cluster import EnrollError, cashare, tls, tokens
from rexcarcer.config import Config
from rexcarcer.model import keys
from rexcarcer.pki.layout import JailCaPaths
from rexcarcer.progress import Progress
from rexcarcer.state.base import Delete, Store, create_json

if TYPE_CHECKING:
    from rexcarcer.pki.keys import SigningKey

PREFIX = keys.JOIN
DEFAULT_WAIT = 120.0
POLL = 0.5
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def request_key(rid: str) -> str:
    return PREFIX + rid


def answer_key(rid: str) -> str:
    return f"{PREFIX}{rid}/answer"


@dataclass(frozen=True, slots=True)
class Pending:
    """A request sent, and what checking and installing its answer needs."""

    rid: str
    kind: str  # "join" | "renew"
    host: str
    address: str
    host_key: SigningKey
    jail_key: SigningKey | None  # None: the jail CA keeps the key on disk
    token: tokens.Token | None
    ca_fingerprint: str
    ca_host: str


def _csrs(host: str, zone: str, host_key: SigningKey, jail_key: SigningKey) -> dict[str, str]:
    from rexcarcer.pki import roles

    name = roles.host_dns_name(host, zone)
    return {"host_csr": roles.csr_pem(host_key, name),
            "jail_csr": roles.csr_pem(jail_key, f"jails of {name}")}  # fmt: skip


def _record(store: Store) -> dict[str, Any]:
    record = cashare.shared(store)
    if record is None:
        raise EnrollError(
            "the cluster has no CA record in etcd",
            hint="run `rex cluster init` on the host that keeps the cluster CA",
        )
    return record


def _send(store: Store, body: dict[str, Any]) -> str:
    rid = secrets.token_hex(8)
    if not create_json(store, request_key(rid), body):
        raise EnrollError("a request with this id exists already", hint="run it again")
    return rid


def start_join(
    store: Store, config: Config, *, host: str, address: str, token: tokens.Token,
    public: Sequence[Network], now: float | None = None,
) -> Pending:  # fmt: skip
    """Make this host's keys and send a join request authenticated by ``token``."""
    from rexcarcer.pki.keys import KeyType, generate

    when = time.time() if now is None else now
    if when >= token.expires:
        when_text = f"{dt.datetime.fromtimestamp(token.expires, dt.UTC):%Y-%m-%d %H:%M} UTC"
        raise EnrollError(
            f"the join token expired at {when_text}",
            hint="make another on the CA host: `rex cluster token`",
        )
    record = _record(store)
    host_key, jail_key = generate(KeyType.ECDSA_P256), generate(KeyType.ECDSA_P256)
    body: dict[str, Any] = {
        "version": 1, "kind": "join", "host": host, "address": address,
        "public": [str(n) for n in public], "token": token.id, "expires": token.expires,
        "nonce": secrets.token_hex(16), "created": int(when),
        **_csrs(host, config.zone, host_key, jail_key),
    }  # fmt: skip
    body["mac"] = tokens.mac(token, body)
    return Pending(_send(store, body), "join", host, address, host_key, jail_key, token,
                   str(record["fingerprint"]), str(record.get("host", "the CA host")))  # fmt: skip


def start_renew(
    store: Store, config: Config, *, host: str, address: str,
    public: Sequence[Network] | None = None, now: float | None = None,
) -> Pending:  # fmt: skip
    """Ask for a new host certificate (and a renewed jail CA, same key), signed with
    the current host key; ``public`` None keeps the jail CA's public ranges."""
    from rexcarcer.pki import jailca, roles
    from rexcarcer.pki.keys import KeyType, generate, load_certificates, load_private_key

    when = time.time() if now is None else now
    files, jpaths = tls.TlsFiles.under(config.root), JailCaPaths.under(config.root)
    if not files.present():
        raise EnrollError(
            "this host has no host certificate to renew",
            hint="join with a token: `rex cluster join --token T`",
        )
    record = _record(store)
    current = load_certificates(files.cert, "host certificate")[0]
    old_key = load_private_key(files.key)
    host_key = generate(KeyType.ECDSA_P256)
    new_jail_key = None if jpaths.key.is_file() else generate(KeyType.ECDSA_P256)
    jail_key = new_jail_key or load_private_key(jpaths.key)
    ranges = jailca.public_ranges(jpaths) if public is None else list(public)
    from rexcarcer.pki.keys import cert_pem

    body: dict[str, Any] = {
        "version": 1, "kind": "renew", "host": host, "address": address,
        "public": [str(n) for n in ranges], "nonce": secrets.token_hex(16),
        "created": int(when), "cert": cert_pem(current).decode(),
        **_csrs(host, config.zone, host_key, jail_key),
    }  # fmt: skip
    body["sig"] = roles.sign_bytes(old_key, tokens.canonical(body))
    return Pending(_send(store, body), "renew", host, address, host_key, new_jail_key, None,
                   str(record["fingerprint"]), str(record.get("host", "the CA host")))  # fmt: skip


def answer(store: Store, pending: Pending) -> dict[str, Any] | None:
    entry = store.get(answer_key(pending.rid))
    return None if entry is None else dict(entry.json())


def forget(store: Store, pending: Pending) -> None:
    """Delete the request and its answer (what is absent is fine)."""
    store.commit([], [Delete(request_key(pending.rid)), Delete(answer_key(pending.rid))])


def wait(
    store: Store, pending: Pending, timeout: float, progress: Progress,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:  # fmt: skip
    """The CA host's answer, polled every POLL seconds for at most ``timeout``."""
    start = clock()
    progress.step(f"Waiting for {pending.ca_host} (the CA host) to sign this host's "
                  f"certificates (at most {timeout:.0f} s)")  # fmt: skip
    told = 0
    while (got := answer(store, pending)) is None:
        waited = clock() - start
        if waited >= timeout:
            forget(store, pending)
            raise EnrollError(
                f"{pending.ca_host} did not sign within {timeout:.0f} s",
                hint=f"its agent signs requests: is `rex agent` running on {pending.ca_host}? "
                "Then run this again"
                + (" with the same token (it was not used)" if pending.token else ""),
            )
        if waited >= told + 10:
            told = int(waited // 10) * 10
            progress.step(f"still waiting for {pending.ca_host} ({told} s)")
        sleep(POLL)
    return got


@dataclass(frozen=True, slots=True)
class Enrolled:
    host_serial: str
    host_not_after: int
    jail_ca_serial: str
    ca_fingerprint: str

    def as_json(self) -> dict[str, Any]:
        return {"host_certificate": self.host_serial, "valid_until": self.host_not_after,
                "jail_ca": self.jail_ca_serial, "ca_fingerprint": self.ca_fingerprint}  # fmt: skip


def finish(
    store: Store, config: Config, pending: Pending, got: dict[str, Any],
    now: dt.datetime | None = None,
) -> Enrolled:  # fmt: skip
    """Check the CA host's answer and install what it signed; forget the request."""
    forget(store, pending)
    if got.get("status") != "signed":
        raise EnrollError(f"{pending.ca_host} refused: {got.get('reason', 'no reason given')}",
                          hint=got.get("hint"))  # fmt: skip
    if pending.token is not None and not tokens.mac_ok(pending.token, got):
        raise EnrollError(
            "the answer to the join request is not authenticated by the token",
            hint="something other than the CA host wrote it into etcd: check who can write there",
        )
    from cryptography.exceptions import InvalidSignature

    try:
        return _install(config, pending, got, now or dt.datetime.now(dt.UTC))
    except (KeyError, TypeError, ValueError, IndexError, InvalidSignature) as exc:
        raise EnrollError(f"a malformed answer from {pending.ca_host}: {exc!r}") from exc


def _install(config: Config, pending: Pending, got: dict[str, Any], now: dt.datetime) -> Enrolled:
    from cryptography import x509

    from rexcarcer.pki import jailca, roles
    from rexcarcer.pki.keys import cert_pem, fingerprint, key_pem, load_private_key, spki

    def certs(name: str) -> list[x509.Certificate]:
        text = str(got.get(name) or "")
        return x509.load_pem_x509_certificates(text.encode()) if text.strip() else []

    issuer, host_cert, jail_cert = certs("ca")[0], certs("host_crt")[0], certs("jail_ca_crt")[0]
    chain, trust = certs("chain"), certs("trust")
    if fingerprint(issuer) != pending.ca_fingerprint:
        raise EnrollError(f"{pending.ca_host} answered with another CA than the cluster's",
                          hint="check who can write to etcd")  # fmt: skip
    jail_key = pending.jail_key or load_private_key(JailCaPaths.under(config.root).key)
    found = roles.host_of(host_cert, issuer, config.zone, now)
    if (
        spki(host_cert.public_key()) != spki(pending.host_key)
        or found is None
        or found != (pending.host, ipaddress.ip_address(pending.address))
    ):
        raise EnrollError("the host certificate in the answer is not this host's",
                          hint="check who can write to etcd")  # fmt: skip
    if spki(jail_cert.public_key()) != spki(jail_key):
        raise EnrollError("the jail CA certificate in the answer is not for this host's key")
    jail_cert.verify_directly_issued_by(issuer)
    files = tls.TlsFiles.under(config.root)
    tls.install(files, key_pem(pending.host_key),
                cert_pem(host_cert) + b"".join(cert_pem(c) for c in chain),
                b"".join(cert_pem(c) for c in trust),
                tls.meta_of(host_cert, pending.ca_fingerprint, pending.address))  # fmt: skip
    public = [ipaddress.ip_network(n) for n in got.get("public", [])]
    jailca.install(JailCaPaths.under(config.root), pending.jail_key, jail_cert, chain, trust,
                   host=pending.host, root=pending.ca_fingerprint, public=public,
                   leaf_days=int(got.get("leaf_days", 90)))  # fmt: skip
    return Enrolled(format(host_cert.serial_number, "x"),
                    int(host_cert.not_valid_after_utc.timestamp()),
                    format(jail_cert.serial_number, "x"), pending.ca_fingerprint)  # fmt: skip


def issue_here(
    store: Store, config: Config, *, address: str, subnet: Network,
    public: Sequence[Network] | None = None, force: bool = False,
) -> Enrolled | None:  # fmt: skip
    """On a host that holds the cluster CA (the CA host, or ``--share-ca``): sign this
    host's certificate and jail CA here and record them; None when both are current.
    ``config`` carries the host's name and the cluster's zone; ``public`` None keeps
    the jail CA's public ranges."""
    from rexcarcer.cluster import hostcerts
    from rexcarcer.pki import ca, jailca
    from rexcarcer.pki.keys import load_certificates
    from rexcarcer.pki.layout import CaPaths

    paths, jpaths = CaPaths.under(config.root), JailCaPaths.under(config.root)
    files = tls.TlsFiles.under(config.root)
    now = dt.datetime.now(dt.UTC)
    root_fp = paths.fingerprint()
    ranges = jailca.public_ranges(jpaths) if public is None else list(public)
    stale = jailca.problem(jpaths, subnet, root_fp, now)
    jail_ok = stale is None and not jailca.is_due(jpaths, now)
    jail_ok = jail_ok and ranges == jailca.public_ranges(jpaths)
    host_ok = tls.current(files, root_fp, address)
    if host_ok and jail_ok and not force:
        return None  # the normal case at every agent pass: decided from two JSON files
    root = ca.load(paths)
    if force or not host_ok:
        tls.issue_local(config, paths, files, address, store)
    if force or not jail_ok:
        issuer = jailca.make_local(root, jpaths, host=config.host, zone=config.zone,
                                   subnet=subnet, public=ranges, now=now,
                                   keep_key=stale is None)  # fmt: skip
        store.commit([], hostcerts.record_ops(store, config.host, root.fingerprint, None,
                                              issuer.cert))  # fmt: skip
    else:
        issuer = jailca.load(jpaths)
    host_cert = load_certificates(files.cert, "host certificate")[0]
    return Enrolled(format(host_cert.serial_number, "x"),
                    int(host_cert.not_valid_after_utc.timestamp()),
                    format(issuer.cert.serial_number, "x"), root.fingerprint)  # fmt: skip
