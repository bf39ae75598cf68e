"""Resource limits of a jail: ``LIMIT memory|cpu|pids|openfiles VALUE``.

::

    mounts.py  pure: /proc/self/mountinfo -> where each cgroup controller lives
    cgroup.py  Linux: ``CgroupDriver`` makes ``rexcarcer/<jail>`` groups (v2, v1
               or hybrid), writes the limits, reads usage, kills and removes;
               ``rlimits_for`` gives RLIMIT_NOFILE for the runner
    rctl.py    FreeBSD: rctl(8) argv builders and parsers, and ``Rctl``, which
               joins them through a runner

The values (the four resources, ``Limits``, ``LimitError``) are the
language's: ``rexcarcer.rexfile.limits``, one layer below, so that the ``.rex``
parser checks them with the same grammar; this package re-exports them.

The Linux backend places a jail's first process in its cgroups (and sets its
rlimits) in the runner's child before exec: ``Runner.run/spawn(cgroups=...,
rlimits=...)``. FreeBSD's rules name the jail, so they apply to whatever the
jail runs, from the moment they are added.

Errors::

    RexError
    └── LimitError (43)   a bad LIMIT value, or a limit this host cannot enforce
"""

from __future__ import annotations

from rexcarcer.rexfile.limits import LimitError, Limits, Resource, parse_limit, parse_limits

__all__ = ["LimitError", "Limits", "Resource", "parse_limit", "parse_limits"]
