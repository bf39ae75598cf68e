"""The logs ``JailHook``: forwarding into the jail, the jail's address into the
collector's lookup table.

- ``prepare`` (before every start): write the forwarding files into the jail
  (the platform knows which: platform/*.py ``write_syslog_forwarding``) and
  rewrite the collector's table from the jail records, so that the collector
  files this jail's messages under its name; a running collector is told with
  SIGHUP.
- ``destroyed``: drop the jail from the table. Its log file stays (``rex logs``
  still reads it; a jail of the same name later appends to it).
"""

from __future__ import annotations

from collections.abc import Sequence

from rexcarcer.errors import UnsafePath
from rexcarcer.host import Host
from rexcarcer.logs.collector import LOG_PORT
from rexcarcer.model.jail import JailRecord
from rexcarcer.model.recordprop import RebuiltJail
from rexcarcer.runtime.base import JailSpec
from rexcarcer.state.records import list_jails


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
        sync_table(host, without=rec.name)

    def rebuilt(self, host: Host, jails: Sequence[RebuiltJail]) -> list[tuple[str, str]]:
        sync_table(host)  # the table follows the records (unchanged when they are)
        return []


def write_forwarding(host: Host, spec: JailSpec) -> None:
    """The files that make the jail's syslog forward to the host's collector."""
    target = spec.gateway or host.config.host_address
    try:
        host.platform.write_syslog_forwarding(spec.root, target, LOG_PORT)
    except OSError as exc:
        raise UnsafePath(f"cannot write syslog forwarding into jail {spec.name}: {exc}") from exc


def sync_table(host: Host, *, without: str | None = None) -> None:
    """Rewrite the address -> jail table from the store; reload a running collector."""
    from rexcarcer.logs import service

    paths = service.paths_for(host.config)
    with host.lock("logs"):
        changed = service.write_table(paths, list_jails(host.store), without=without)
    if changed:
        service.reload(paths)
