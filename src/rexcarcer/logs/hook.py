"""The logs ``JailHook``: forwarding into the jail, the jail's address into the
collector's lookup table.

- ``prepare`` (before every start): write the forwarding files into the jail
  (logs/forward.py) and rewrite the collector's table from the jail records, so
  that the collector files this jail's messages under its name; a running
  collector is told with SIGHUP.
- ``destroyed``: drop the jail from the table. Its log file stays (``rex logs``
  still reads it; a jail of the same name later appends to it).

Imported at every CLI start (engine/hooks.py): everything else is imported when
a hook runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rexcarcer.runtime.base import RuntimeKind

if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address

    from rexcarcer.engine.hooks import JailRecord
    from rexcarcer.engine.host import Host
    from rexcarcer.runtime.base import JailSpec


class LogHook:
    name = "logs"

    def prepare(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        write_forwarding(host, spec)
        sync_table(host)

    def started(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        pass

    def stopped(self, host: Host, rec: JailRecord) -> None:
        pass

    def destroyed(self, host: Host, rec: JailRecord) -> None:
        sync_table(host, without=str(rec["name"]))


def write_forwarding(host: Host, spec: JailSpec) -> None:
    """The files that make the jail's syslog forward to the host's collector."""
    from rexcarcer.engine import files
    from rexcarcer.errors import UnsafePath
    from rexcarcer.logs import forward

    target = spec.gateway or host.config.host_address
    try:
        if host.runtime.kind is RuntimeKind.FREEBSD:
            _freebsd(spec, target)
        else:
            files.write_file(spec.root, forward.RC_PRE, forward.linux_rc_pre(target).encode())
    except OSError as exc:
        raise UnsafePath(f"cannot write syslog forwarding into jail {spec.name}: {exc}") from exc


def _freebsd(spec: JailSpec, target: IPv4Address | IPv6Address) -> None:
    from rexcarcer.engine import files
    from rexcarcer.logs import forward
    from rexcarcer.pki.jailfs import read_small

    files.write_file(spec.root, forward.SYSLOG_D, forward.freebsd_syslog_d(target).encode())
    current = read_small(spec.root, forward.SYSLOG_CONF)
    updated = forward.syslog_conf_with_include(None if current is None else current.decode())
    if updated is not None:
        files.write_file(spec.root, forward.SYSLOG_CONF, updated.encode())


def sync_table(host: Host, *, without: str | None = None) -> None:
    """Rewrite the address -> jail table from the store; reload a running collector."""
    from rexcarcer.engine.jails import PREFIX
    from rexcarcer.logs import service

    paths = service.paths_for(host.config)
    with host.lock("logs"):
        records = [e.json() for e in host.store.list(PREFIX)]
        changed = service.write_table(paths, records, without=without)
    if changed:
        service.reload(paths)
