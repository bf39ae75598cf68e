"""Jail logs: each jail's syslog forwarded to a collector on the host (DESIGN section 4).

::

    collector.py  pure: where the collector's files live, rsyslog.conf for it (a UDP
                  listener on the host's jail address only, one file per jail), the
                  address -> jail lookup table, the rsyslogd command lines, and
                  FreeBSD's rc.d script for it
    forward.py    pure: the files that make a jail forward its syslog to the host
                  (FreeBSD syslogd: /etc/syslog.d; Linux busybox: syslogd -R from
                  /etc/rexcarcer/rc.pre)
    hook.py       the ``JailHook``: forwarding files before start, the lookup table
                  and a reload of the collector when a jail appears or goes
    service.py    running the collector: write and check its configuration, start
                  it, keep it running, reload it, stop it (``rex host serve``)
    reader.py     ``rex logs NAME [-n N] [-f]``: the last lines of a jail's file, and
                  following it across truncation and rotation

Errors::

    RexError
    └── LogsError (30)   the collector's configuration or process, a jail log
"""

from __future__ import annotations

from rexcarcer.errors import RexError


class LogsError(RexError):
    """The log collector cannot be configured, started or reached, or a jail's log
    cannot be read. Beside the logs code, like ``DnsError``; a unique exit code."""

    exit_code = 30
