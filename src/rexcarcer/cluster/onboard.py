"""``rex cluster init / token / join / renew / leave``: the PKI side of each, on
top of membership.py (the registration) and enroll.py (the requests).

- init: the cluster CA stays on this host (created if missing); its
  certificates go to etcd (``--share-ca``: its key too), and a join token is made;
- token: another one-time token (the CA host only: it holds ``join.key``);
- join: register, then get this host's certificate and jail CA: signed here
  when this host holds the cluster CA, else by the CA host for a token (or,
  for a host that has its certificate, a renewal);
- renew: the same without a token, signed with the current certificate;
- leave: deregister and revoke (membership.py), then drop the local credentials.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rexcarcer.cluster import ClusterError, EnrollError, cashare, enroll, membership, model, tls
from rexcarcer.cluster import tokens as tok
from rexcarcer.config import Config
from rexcarcer.host import Host
from rexcarcer.pki.layout import CaPaths, JailCaPaths
from rexcarcer.progress import Progress
from rexcarcer.state.base import Store
from rexcarcer.state.lease import Leases

Network = enroll.Network


@dataclass(frozen=True, slots=True)
class CaState:
    fingerprint: str
    ca_host: str
    here: bool  # this host holds the key
    shared: bool  # the key is in etcd

    def as_json(self) -> dict[str, Any]:
        return {"ca_fingerprint": self.fingerprint, "ca_host": self.ca_host,
                "ca_here": self.here, "ca_shared": self.shared}  # fmt: skip


def init_ca(host: Host, store: Store, *, share: bool, endpoints: Sequence[str]) -> CaState:
    """Publish this host's CA (made now if missing), or confirm the cluster's."""
    from rexcarcer.pki import ca

    config = host.config
    if share:
        cashare.check_share(endpoints, config.etcd_cert)
    paths = CaPaths.under(config.root)
    with host.lock("ca"):
        have = cashare.check(store, paths)  # another CA here than the cluster's: refused
        if have is not None and not paths.exists():
            if share:
                raise ClusterError(
                    f"the cluster CA's key is on host {have.get('host')}, not here",
                    hint=f"run `rex cluster init --share-ca` on {have.get('host')}",
                )
            return CaState(str(have["fingerprint"]), str(have.get("host")), False,
                           "files" in have)  # fmt: skip
        if not paths.exists():
            now = ca.utcnow()
            host.progress.step(f"Creating the cluster CA in {paths.dir}")
            ca.install(paths, ca.self_signed(ca.CaSettings(), now), now=now)
        fingerprint, _ = cashare.publish(store, paths, config.host, share=share)
    record = cashare.shared(store) or {}
    return CaState(fingerprint, str(record.get("host", config.host)), True, share)


def make_token(config: Config, store: Store, ttl: int) -> tok.Token:
    """A one-time join token, valid ``ttl`` seconds; on the CA host only."""
    paths = CaPaths.under(config.root)
    record = cashare.shared(store)
    if record is None:
        raise ClusterError("no cluster CA in etcd", hint="run `rex cluster init` first")
    if not paths.exists() or paths.fingerprint() != record["fingerprint"]:
        where = record.get("host", "the CA host")
        raise EnrollError(f"join tokens are made on the CA host ({where})",
                          hint=f"run `rex cluster token` on {where}")  # fmt: skip
    now = time.time()
    token = tok.mint(tok.join_key(paths.dir / "join.key", create=True), ttl, now)
    tok.publish(store, token, config.host, now)
    return token


@dataclass(frozen=True, slots=True)
class JoinResult:
    joined: membership.Joined
    how: str  # "signed here", "signed by <host>", "current", "installed shared CA"
    enrolled: enroll.Enrolled | None
    ca: str

    def as_json(self) -> dict[str, Any]:
        done = self.enrolled.as_json() if self.enrolled else {}
        return {**self.joined.as_json(), "certificates": self.how, "ca_fingerprint": self.ca,
                **done}  # fmt: skip


def _as_member(config: Config, name: str, zone: str, subnet: Network) -> Config:
    return dataclasses.replace(config, host=name, zone=zone, subnet=subnet)


def join(
    host: Host, store: Store, leases: Leases | None, *, name: str, address: str, token: str | None,
    public: Sequence[Network] | None, wait: float, progress: Progress,
) -> JoinResult:  # fmt: skip
    """Register this host and give it its certificates (see the module docstring)."""
    config = host.config
    paths = CaPaths.under(config.root)
    parsed = tok.parse(token) if token else None  # a malformed token fails before anything
    with host.lock("ca"):
        record = cashare.check(store, paths)  # another CA here: refused before registering
        if record is None:
            raise EnrollError("the cluster has no CA in etcd",
                              hint="run `rex cluster init` on the host that keeps it")  # fmt: skip
        _, installed = cashare.install(store, paths)  # --share-ca clusters only
    joined = membership.join(store, leases, name, address)
    member = _as_member(config, name, joined.settings.zone, joined.subnet)
    fp = str(record["fingerprint"])
    if paths.exists():
        with host.lock("ca"):
            done = enroll.issue_here(store, member, address=address, subnet=joined.subnet,
                                     public=public)  # fmt: skip
        how = "installed from etcd and signed here" if installed else "signed here"
        return JoinResult(joined, how if done else "current", done, fp)
    if parsed is None and _current(member, fp, address, joined.subnet, public):
        return JoinResult(joined, "current", None, fp)
    if parsed is not None:
        pending = enroll.start_join(store, member, host=name, address=address, token=parsed,
                                    public=public or ())  # fmt: skip
    elif tls.TlsFiles.under(config.root).present():
        pending = enroll.start_renew(store, member, host=name, address=address, public=public)
    else:
        ca_host = record.get("host", "the CA host")
        raise EnrollError(
            "joining this cluster takes a join token",
            hint=f"make one on {ca_host} (`rex cluster token`; `rex cluster init` printed "
            "one) and run `rex cluster join --token TOKEN`",
        )
    got = enroll.wait(store, pending, wait, progress)
    done = enroll.finish(store, member, pending, got)
    return JoinResult(joined, f"signed by {pending.ca_host}", done, fp)


def _current(
    member: Config, fp: str, address: str, subnet: Network, public: Sequence[Network] | None
) -> bool:
    import datetime as dt

    from rexcarcer.pki import jailca

    jpaths = JailCaPaths.under(member.root)
    files = tls.TlsFiles.under(member.root)
    now = dt.datetime.now(dt.UTC)
    ok = tls.current(files, fp, address) and jailca.problem(jpaths, subnet, fp, now) is None
    same = public is None or list(public) == jailca.public_ranges(jpaths)
    return ok and same and not jailca.is_due(jpaths, now)


def renew(
    host: Host, store: Store, *, public: Sequence[Network] | None, wait: float,
    progress: Progress,
) -> tuple[str, enroll.Enrolled | None]:  # fmt: skip
    """New certificates for this host now: (how, what)."""
    config = host.config
    view = membership.view(store)
    rec = model.host_records(view).get(config.host)
    subnet = model.subnet_of(view, config.host)
    if rec is None or subnet is None:
        raise ClusterError(f"host {config.host!r} is not in the cluster",
                           hint="run `rex cluster join` first")  # fmt: skip
    address = str(rec["address"])
    zone = membership.settings(store).zone
    member = _as_member(config, config.host, zone, subnet)
    if CaPaths.under(config.root).exists():
        with host.lock("ca"):
            done = enroll.issue_here(store, member, address=address, subnet=subnet,
                                     public=public, force=True)  # fmt: skip
        return "signed here", done
    pending = enroll.start_renew(store, member, host=config.host, address=address, public=public)
    done = enroll.finish(store, member, pending, enroll.wait(store, pending, wait, progress))
    return f"signed by {pending.ca_host}", done


def leave(config: Config, store: Store, *, force: bool, host: str | None = None) -> list[str]:
    """Deregister and revoke ``host`` (default: this one); for this host, then
    remove its (revoked) credentials. The cluster CA itself stays where it is."""
    removed = membership.leave(store, host or config.host, force=force)
    if host not in (None, config.host):
        return removed  # a dead or compromised host, removed from here
    for d in (tls.TlsFiles.under(config.root).cert.parent, JailCaPaths.under(config.root).dir):
        shutil.rmtree(d, ignore_errors=True)
    return removed
