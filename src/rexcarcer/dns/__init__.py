"""Cluster DNS: the records of a jail, pushed into unbound (DESIGN section 5).

::

    records.py   pure: a jail record -> A/AAAA/PTR/SRV records, and the validation
                 that keeps anything but well-formed names and values from unbound
    plan.py      pure: the unbound commands that turn one record set into another
    unbound.py   the driver: unbound's control protocol (UBCT1) over its unix
                 socket, the persisted ``include:`` file; ``FakeUnbound`` for tests
    probe.py     one DNS query without dnspython (the sentinel check)
    publish.py   the published set in the store (``dns/<jail>``), name claims
                 (``names/<fqdn>``), publish / withdraw / check
    hook.py      the ``JailHook`` that calls publish.py at start, stop, destroy
    services.py  the jailer services: unbound.conf for rex, ``rex host setup``
    serve.py     ``rex host serve``: unbound in the foreground, supervised
"""

from __future__ import annotations

from rexcarcer.errors import RexError

DNS_PORT = 53


class DnsError(RexError):
    """unbound refused a command, or a name or value is invalid (exit 28);
    ``unbound.UnboundUnreachable`` (exit 32): nothing answers on its socket.

    Lives beside the DNS code rather than in ``errors.py`` so that the DNS
    package stays self-contained; its exit code is unique in the tree."""

    exit_code = 28
