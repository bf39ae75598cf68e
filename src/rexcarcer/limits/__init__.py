"""Resource limits of a jail: ``LIMIT memory|cpu|pids|openfiles VALUE``.

::

    spec.py    pure: the four resources, their values, ``Limits``, ``LimitError``
    mounts.py  pure: /proc/self/mountinfo -> where each cgroup controller lives
    cgroup.py  Linux: ``CgroupDriver`` makes ``rexcarcer/<jail>`` groups (v2, v1
               or hybrid), writes the limits, reads usage, kills and removes;
               ``rlimits_for`` gives RLIMIT_NOFILE for the runner
    rctl.py    FreeBSD: rctl(8) argv builders and parsers, and ``Rctl``, which
               joins them through a runner

The Linux backend places a jail's first process in its cgroups (and sets its
rlimits) in the runner's child before exec: ``Runner.run/spawn(cgroups=...,
rlimits=...)``. FreeBSD's rules name the jail, so they apply to whatever the
jail runs, from the moment they are added.

Errors::

    RexError
    └── LimitError (43)   a bad LIMIT value, or a limit this host cannot enforce
"""

from __future__ import annotations

from rexcarcer.limits.spec import LimitError, Limits, Resource, parse_limit, parse_limits

__all__ = ["LimitError", "Limits", "Resource", "parse_limit", "parse_limits"]
