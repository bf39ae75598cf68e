"""Where the DNS files live, per flavour of unbound.

- ``rex`` (Linux, and any host without a base resolver): rex's own unbound,
  configured entirely by rex under ``$REX_ROOT/unbound/``.
- ``local_unbound`` (FreeBSD): the base system's resolver. Its
  ``/var/unbound/unbound.conf`` (written by local-unbound-setup(8)) chroots to
  ``/var/unbound`` and includes ``/var/unbound/conf.d/*.conf``, so rex's two
  files go there, inside the chroot, where a reload can still read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rexcarcer.config import Config
from rexcarcer.runtime.base import RuntimeKind

DNS_PORT = 53


class Flavour(StrEnum):
    REX = "rex"
    LOCAL_UNBOUND = "local_unbound"


@dataclass(frozen=True, slots=True)
class Layout:
    flavour: Flavour
    workdir: Path  # unbound's directory:
    conf: Path  # the file unbound is started with (-c)
    server_conf: Path  # rex's server: settings (the same file as conf for REX)
    data: Path  # the persisted records, an include: file
    control: Path  # the control socket
    unbound: str  # the daemon
    checkconf: str  # its configuration checker
    log: Path  # the daemon's output under `rex host serve`
    state: Path  # `rex host serve`'s PIDs


def layout_for(config: Config) -> Layout:
    if config.runtime is RuntimeKind.FREEBSD:
        work = Path("/var/unbound")
        return Layout(
            flavour=Flavour.LOCAL_UNBOUND,
            workdir=work,
            conf=work / "unbound.conf",
            server_conf=work / "conf.d" / "rexcarcer.conf",
            data=work / "conf.d" / "rexcarcer-data.conf",
            control=config.unbound_control,
            unbound="/usr/sbin/local-unbound",
            checkconf="/usr/sbin/local-unbound-checkconf",
            log=config.root / "log" / "local-unbound.log",
            state=config.root / "run" / "dns-serve.json",
        )
    work = config.root / "unbound"
    return Layout(
        flavour=Flavour.REX,
        workdir=work,
        conf=work / "unbound.conf",
        server_conf=work / "unbound.conf",
        data=work / "rexcarcer-data.conf",
        control=config.unbound_control,
        unbound="unbound",
        checkconf="unbound-checkconf",
        log=work / "unbound.log",
        state=work / "serve.json",
    )
