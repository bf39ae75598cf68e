"""The DNS ``JailHook``: claim names before start, publish after start, withdraw
at stop, release names at destroy (engine/base.py).

DNS is on when ``REX_DNS=on``, off when ``off``, and with the default ``auto``
when something listens on unbound's control socket, so a host without unbound
runs jails without DNS (``rex doctor`` says so, and ``rex dns check`` publishes
the running jails once unbound is up). With ``on``, a jail does not start while
unbound is down.
"""

from __future__ import annotations

import socket
import stat
from typing import TYPE_CHECKING

from rexcarcer.dns import DNS_PORT
from rexcarcer.dns.publish import Publisher
from rexcarcer.dns.records import check_zone, jail_records, reverse_zones
from rexcarcer.dns.unbound import DnsBackend, Unbound
from rexcarcer.errors import Conflict

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rexcarcer.config import Config
    from rexcarcer.host import Host
    from rexcarcer.model.jail import JailRecord
    from rexcarcer.model.recordprop import RebuiltJail
    from rexcarcer.runtime.base import JailSpec


def dns_enabled(config: Config) -> bool:
    if config.dns == "off":
        return False
    if config.dns == "on":
        return True
    path = config.unbound_control
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))  # ~0.1 ms; a socket file unbound left is refused
        return True
    except OSError:
        return False


def backend_for(config: Config) -> Unbound:
    return Unbound(config.unbound_control, listener=(str(config.host_address), DNS_PORT))


def publisher_for(host: Host, backend: DnsBackend | None = None) -> Publisher:
    config = host.config
    return Publisher(
        store=host.store,
        backend=backend if backend is not None else backend_for(config),
        zone=check_zone(config.zone),
        reverse=tuple(reverse_zones(config.subnet)),
        data_file=host.platform.unbound_layout().data,
        lock=lambda: host.lock("dns"),
        host=config.host,
    )


class DnsHook:
    name = "dns"

    def __init__(self, backend: DnsBackend | None = None) -> None:
        self.backend = backend

    def _publisher(self, host: Host) -> Publisher:
        return publisher_for(host, self.backend)

    def prepare(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        # validate every record and claim the HOSTNAME before the jail starts
        jail_records(rec, check_zone(host.config.zone))
        self._publisher(host).claim(rec)

    def started(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        self._publisher(host).publish(rec)

    def stopped(self, host: Host, rec: JailRecord) -> None:
        self._publisher(host).withdraw(rec.name)

    def destroyed(self, host: Host, rec: JailRecord) -> None:
        self._publisher(host).release(rec.name)

    def rebuilt(self, host: Host, jails: Sequence[RebuiltJail]) -> list[tuple[str, str]]:
        """Claim every jail's HOSTNAME again and publish the running ones, as
        ``rex dns check`` does: unbound ends up serving exactly those."""
        publisher = self._publisher(host)
        notes: list[tuple[str, str]] = []
        for j in jails:
            try:
                publisher.claim(j.rec)
            except Conflict as exc:
                notes.append((j.rec.name, exc.message))
        publisher.check({j.rec.name: j.rec for j in jails if j.running}, repair=True)
        return notes


def dns_hook(config: Config) -> DnsHook | None:
    """The hook when DNS is enabled for this host, else None."""
    return DnsHook() if dns_enabled(config) else None


def doctor_check(config: Config) -> tuple[bool, str]:
    """(ok, detail) for ``rex doctor``. DNS is optional: without unbound the jails
    run unpublished, which is reported, not failed."""
    from rexcarcer.dns import DnsError

    where = config.unbound_control
    if config.dns == "off":
        return True, "off (REX_DNS=off): jails are not published in DNS"
    if not dns_enabled(config):
        return True, (
            f"not set up: no unbound answers on {where}, so jails are not published in DNS"
            " (REX_DNS=auto); run `rex host setup` or `rex host serve`"
        )
    try:
        check_zone(config.zone)
        status = backend_for(config).status()
    except DnsError as exc:
        return False, f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    return True, f"{status}; zone {config.zone}, listener {config.host_address}:{DNS_PORT}"
