"""Extension points of the jail lifecycle.

Features that hang off a jail's life (DNS records, TLS identity, syslog
forwarding) implement ``JailHook`` and are listed in ``default_hooks``. Hooks
run in list order for ``prepare``/``started`` and in reverse for
``stopped``/``destroyed``, so what is set up last is taken down first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rexcarcer.config import Config
    from rexcarcer.engine.host import Host
    from rexcarcer.runtime.base import JailSpec

JailRecord = dict[str, Any]


class JailHook(Protocol):
    name: str

    def prepare(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        """Before the jail starts: write files into ``spec.root``."""
        ...

    def started(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        """The jail runs: publish it (before ``rex up`` returns)."""
        ...

    def stopped(self, host: Host, rec: JailRecord) -> None:
        """The jail stopped: withdraw what ``started`` published. Idempotent."""
        ...

    def destroyed(self, host: Host, rec: JailRecord) -> None:
        """The jail is gone for good (revoke, forget). Idempotent."""
        ...


def default_hooks(config: Config) -> list[JailHook]:
    from rexcarcer.dns.hook import dns_hook

    hooks: list[JailHook] = []
    dns = dns_hook(config)  # None when DNS is off or no unbound is set up
    if dns is not None:
        hooks.append(dns)
    # identity: /etc/ssl/rc from the cluster CA (made on first use); logs: syslog
    # forwarding to the host's collector (pki/hook.py, logs/hook.py)
    from rexcarcer.logs.hook import LogHook
    from rexcarcer.pki.hook import IdentityHook

    hooks += [IdentityHook(), LogHook()]
    return hooks
