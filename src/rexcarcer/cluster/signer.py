"""The CA host's side of joining and renewing (enroll.py is the other host's),
and the cluster CA's CRL. The CA host's agent runs ``Signer.sync`` on every
change it sees (agent/cluster.py); only a host holding the cluster CA's key can.

A request is answered once (``join/<id>/answer``, create-if-absent, in one
transaction with everything it changes):

- join: the token must be known (``cluster/tokens/<id>``, whose hash matches
  the token recomputed from ``join.key``), not expired, and the request's MAC
  must verify with it; the token record is deleted in the same transaction, so
  it serves one join. A refused request leaves the token as it was.
- renew: the request carries the host's current certificate, which must be a
  host certificate of this cluster for that host (pki/roles.py ``host_of``),
  the one recorded in ``pki/hosts/<host>``, not revoked, and the request is
  signed with its key, at most ten minutes old.

Either way the host must be registered at the request's address with a claimed
subnet, and the certificates are built from the cluster's records, taking only
the public keys from the CSRs (whose self-signatures must verify): the host
certificate names ``<host>.host.<zone>`` and the registered address; the jail
CA is constrained to the host's subnet and the public ranges it asked for, which
may not overlap another host's subnet or contain a host's address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rexcarcer.cluster import ClusterError, hostcerts, model, tokens
from rexcarcer.cluster.enroll import PREFIX, answer_key, request_key
from rexcarcer.errors import RexError
from rexcarcer.model import keys
from rexcarcer.pki.layout import CaPaths
from rexcarcer.state.base import Compare, Delete, Entry, Op, Put, Store, dumps, put_json

if TYPE_CHECKING:
    from rexcarcer.pki.ca import Ca

log = logging.getLogger("rexcarcer.agent")

MAX_AGE = 600  # seconds a renewal request stays good
CRL_REFRESH = 86400  # re-sign the root CRL daily (it is valid for 7 days)


class Refused(Exception):
    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


def pending(view: model.View) -> list[tuple[str, Entry]]:
    """Requests under ``join/`` without an answer, in key order."""
    requests = {rest: e for rest, e in model.under(view, PREFIX) if "/" not in rest}
    answered = {rest.split("/")[0] for rest, _ in model.under(view, PREFIX) if "/" in rest}
    return [(rid, e) for rid, e in sorted(requests.items()) if rid not in answered]


@dataclass
class Signer:
    store: Store
    paths: CaPaths
    zone: str

    def sync(self, view: model.View) -> None:
        now = dt.datetime.now(dt.UTC)
        for rid, entry in pending(view):
            log.info("CA: %s", self.handle(rid, entry, now))
        self.expire_tokens(view, now.timestamp())
        if root_crl_stale(view, self.paths.fingerprint(), now.timestamp()):
            publish_root_crl(self.store, self.paths, now)

    def handle(self, rid: str, entry: Entry, now: dt.datetime) -> str:
        from rexcarcer.pki import ca

        try:
            body = entry.json()
        except ValueError:
            body = None
        compares: list[Compare] = []
        ops: list[Op] = []
        try:
            if not isinstance(body, dict):
                raise Refused("a request must be a JSON object")
            compares, ops, answer = decide(self.store, self.paths, ca.load(self.paths),
                                           self.zone, body, now)  # fmt: skip
        except Refused as exc:
            answer = {"version": 1, "kind": "answer", "status": "refused",
                      "reason": exc.reason, "hint": exc.hint}  # fmt: skip
        compares += [Compare(request_key(rid), entry.revision), Compare(answer_key(rid), None)]
        done = self.store.commit(compares, [*ops, Put(answer_key(rid), dumps(answer))])
        info = body if isinstance(body, dict) else {}
        what = f"{info.get('kind', '?')} request {rid} of host {str(info.get('host', '?'))[:63]}"
        if not done:
            return f"{what}: changed meanwhile; looked at again at the next change"
        return f"{what}: {answer['status']}" + (
            f" ({answer['reason']})" if answer["status"] != "signed" else ""
        )

    def expire_tokens(self, view: model.View, now: float) -> None:
        for _, e in model.under(view, tokens.PREFIX):
            expires = model.record(e).get("expires", 0)
            if isinstance(expires, int) and expires <= now:
                self.store.commit([Compare(e.key, e.revision)], [Delete(e.key)])


def _text(body: dict[str, Any], field: str, limit: int = 16384) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Refused(f"the request has no valid {field!r}")
    return value


def decide(
    store: Store, paths: CaPaths, root: Ca, zone: str, body: dict[str, Any], now: dt.datetime
) -> tuple[list[Compare], list[Op], dict[str, Any]]:
    """What answering ``body`` takes: (compares, operations, the answer); or Refused."""
    from rexcarcer.pki import PkiError, jailca, roles
    from rexcarcer.pki.keys import cert_pem, spki

    host, address = _text(body, "host", 63), _text(body, "address", 64)
    try:
        model.check_host_name(host)
        ip = ipaddress.ip_address(address)
    except (ClusterError, ValueError) as exc:
        raise Refused(f"bad host name or address: {exc}") from exc
    compares: list[Compare] = []
    ops: list[Op] = []
    token = None
    if body.get("kind") == "join":
        token, entry = _check_token(store, paths, body, now.timestamp())
        compares.append(Compare(entry.key, entry.revision))
        ops.append(Delete(entry.key))  # one join per token
    elif body.get("kind") == "renew":
        _check_renewal(store, root, zone, body, now)
    else:
        raise Refused(f"unknown request kind {body.get('kind')!r}")
    subnet = _registered(store, host, ip)
    public = _public_ranges(store, host, body.get("public", []))
    try:
        host_pub = roles.csr_key(_text(body, "host_csr"))
        jail_pub = roles.csr_key(_text(body, "jail_csr"))
    except PkiError as exc:
        raise Refused(exc.message) from exc
    if spki(host_pub) == spki(jail_pub):
        raise Refused("the host key and the jail CA key must differ")
    permitted, excluded = roles.jail_ca_constraints(subnet, public)
    try:
        host_cert = roles.host_certificate(root, host_pub, host, zone, ip, now)
        jail_cert = roles.jail_ca_certificate(root, jail_pub, host, zone, permitted, excluded, now)
    except PkiError as exc:
        raise Refused(exc.message, exc.hint) from exc
    ops += hostcerts.record_ops(store, host, root.fingerprint, host_cert, jail_cert,
                                now.timestamp())  # fmt: skip
    answer: dict[str, Any] = {
        "version": 1, "kind": "answer", "status": "signed",
        "host_crt": cert_pem(host_cert).decode(), "jail_ca_crt": cert_pem(jail_cert).decode(),
        "ca": cert_pem(root.cert).decode(), "trust": root.trust_pem().decode(),
        "chain": b"".join(cert_pem(c) for c in jailca.chain_above(root)).decode(),
        "public": [str(n) for n in public], "leaf_days": root.leaf_days,
    }  # fmt: skip
    if token is not None:
        answer["mac"] = tokens.mac(token, answer)
    return compares, ops, answer


def _check_token(
    store: Store, paths: CaPaths, body: dict[str, Any], now: float
) -> tuple[tokens.Token, Entry]:
    tid, expires = _text(body, "token", 16), body.get("expires")
    entry = store.get(tokens.PREFIX + tid)
    if entry is None or not isinstance(expires, int):
        raise Refused("the join token was used already, or never made",
                      hint="make another on the CA host: `rex cluster token`")  # fmt: skip
    try:
        token = tokens.derive(tokens.join_key(paths.dir / "join.key"), tid, expires)
    except ClusterError as exc:
        raise Refused(exc.message, exc.hint) from exc
    if model.record(entry).get("sha256") != token.digest:
        raise Refused("the join token is not one this CA host made",
                      hint="make another on the CA host: `rex cluster token`")  # fmt: skip
    if now >= expires:
        raise Refused("the join token expired",
                      hint="make another on the CA host: `rex cluster token`")  # fmt: skip
    if not tokens.mac_ok(token, body):
        raise Refused(
            "the request's MAC does not verify: it was made without the token, or changed "
            "on its way through etcd",
            hint="check the token; check who can write to etcd",
        )
    return token, entry


def _check_renewal(
    store: Store, root: Ca, zone: str, body: dict[str, Any], now: dt.datetime
) -> None:
    from cryptography import x509

    from rexcarcer.pki import registry, roles

    try:
        cert = x509.load_pem_x509_certificate(_text(body, "cert").encode())
    except ValueError as exc:
        raise Refused("the renewal carries no readable certificate") from exc
    found = roles.host_of(cert, root.cert, zone, now)
    if found is None or found[0] != body.get("host"):
        raise Refused("the renewal is not made with that host's certificate from this cluster",
                      hint="join again with a token: `rex cluster join --token T`")  # fmt: skip
    current = hostcerts.current(store, found[0])
    if registry.is_revoked(store, cert.serial_number) or (
        current is not None and current.get("serial") != format(cert.serial_number, "x")
    ):
        raise Refused("the renewal is made with a revoked or superseded certificate",
                      hint="join again with a token: `rex cluster join --token T`")  # fmt: skip
    created = body.get("created")
    if not isinstance(created, int) or abs(now.timestamp() - created) > MAX_AGE:
        raise Refused("the renewal request is too old (or the clocks disagree)",
                      hint="run `rex cluster renew` again; check the hosts' clocks")  # fmt: skip
    if not roles.signature_ok(cert, _text(body, "sig", 2048), tokens.canonical(body)):
        raise Refused("the renewal's signature does not verify with the host's certificate")


def _registered(store: Store, host: str, ip: model.Address) -> model.Network:
    entry = store.get(model.host_key(host))
    if entry is None:
        raise Refused(f"host {host} is not registered",
                      hint="`rex cluster join` registers it first")  # fmt: skip
    try:
        registered = ipaddress.ip_address(str(model.record(entry).get("address")))
    except ValueError:
        registered = None
    if registered != ip:
        raise Refused(f"host {host} is registered at {registered}, not {ip}")
    claims = model.subnet_claims({e.key: e for e in store.list(model.SUBNETS)})
    subnet = next((net for net, owner in claims.items() if owner == host), None)
    if subnet is None:
        raise Refused(f"host {host} holds no jail subnet")
    return subnet


def _public_ranges(store: Store, host: str, raw: object) -> list[model.Network]:
    if not isinstance(raw, list) or len(raw) > 32:
        raise Refused("bad public ranges")
    try:
        public = [ipaddress.ip_network(str(r), strict=True) for r in raw]
    except ValueError as exc:
        raise Refused(f"bad public range: {exc}") from exc
    claims = model.subnet_claims({e.key: e for e in store.list(model.SUBNETS)})
    hosts = model.host_records({e.key: e for e in store.list(model.HOSTS)})
    for net in public:
        other = next((n for n, h in claims.items() if h != host and n.overlaps(net)), None)
        if other is not None:
            raise Refused(f"the public range {net} overlaps {other}, another host's jail subnet")
        for name, rec in hosts.items():
            addr = ipaddress.ip_address(str(rec.get("address", "0.0.0.0")))
            if addr.version == net.version and addr in net:
                raise Refused(f"the public range {net} contains host {name}'s address {addr}")
    return public


# -- the cluster CA's CRL ----------------------------------------------------------


def _root_revocations(view: model.View, issuer: str, now: float) -> list[dict[str, Any]]:
    out = [model.record(e) for _, e in model.under(view, keys.PKI_REVOKED)]
    return [r for r in out if r.get("issuer") == issuer and int(r.get("not_after", 0)) > now]


def root_crl_stale(view: model.View, issuer: str | None, now: float) -> bool:
    if issuer is None:
        return False
    serials = sorted(str(r["serial"]) for r in _root_revocations(view, issuer, now))
    entry = view.get(keys.PKI_ROOT_CRL)
    have = model.record(entry) if entry is not None else {}
    fresh = now - float(have.get("updated", 0)) < CRL_REFRESH
    return not (have.get("issuer") == issuer and have.get("serials") == serials and fresh)


def publish_root_crl(store: Store, paths: CaPaths, now: dt.datetime, days: int = 7) -> bytes:
    """Sign the cluster CA's CRL (revoked host certificates and jail CAs), keep it in
    ``$REX_ROOT/ca/crl.pem`` and publish it as ``pki/root-crl``."""
    from rexcarcer.pki import ca, crl, registry

    root = ca.load(paths)
    entries = registry.revoked(store, root.fingerprint, now.timestamp())
    data = crl.pem(crl.build(root, entries, now, days))
    crl.write(paths.crl, data)
    put_json(store, keys.PKI_ROOT_CRL, {
        "pem": data.decode(), "issuer": root.fingerprint, "updated": int(now.timestamp()),
        "serials": sorted(format(e.serial, "x") for e in entries),
    })  # fmt: skip
    return data


def sign_pending(store: Store, paths: CaPaths, zone: str) -> int:
    """Answer every pending request once, as the agent's next pass would."""
    view = {e.key: e for e in store.list(PREFIX)}
    found = pending(view)
    signer = Signer(store, paths, zone)
    now = dt.datetime.now(dt.UTC)
    for rid, entry in found:
        try:
            log.info("CA: %s", signer.handle(rid, entry, now))
        except RexError as exc:
            log.warning("CA: request %s: %s", rid, exc)
    return len(found)
