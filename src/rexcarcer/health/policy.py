"""RESTART and DEPENDS as the host agent applies them (docs/agent.md). Pure.

A jail the store wants running that does not run is in one of two cases:

- it has not run since the host booted (its health record names an earlier
  boot, or there is none): it is started whatever its policy; this is the
  boot path, in DEPENDS order;
- it ran in this boot and stopped on its own (not through ``rex stop``): its
  policy decides. ``no``: never started again. ``on-failure`` (the default):
  started again when the run failed, that is when the jail's init exited with
  a status other than 0 or was killed by a signal, or when the runtime cannot
  tell how it ended. ``always``: started again however it ended, a clean exit
  (status 0: on Linux the jail's init got SIGTERM, e.g. ``kill 1`` inside the
  jail) included.

Restarts back off: the first comes at once; a jail that stops again within
``STABLE`` seconds of its start waits 1 s, 2 s, 4 s, ... up to ``MAX_DELAY``
before the next; one that ran ``STABLE`` seconds starts the count again.

A jail starts only after every jail it ``DEPENDS`` on is ready: healthy when
that jail has a HEALTHCHECK, else running.
"""

from __future__ import annotations

from collections.abc import Mapping

from rexcarcer.model.health import Health, HealthRecord
from rexcarcer.model.jail import JailRecord
from rexcarcer.rexfile.ast import RestartPolicy
from rexcarcer.runtime.base import JailEnd

STABLE = 30.0
FIRST_DELAY = 1.0
MAX_DELAY = 300.0


def ran_this_boot(health: HealthRecord | None, boot: str) -> bool:
    return health is not None and health.boot == boot


def restart_wanted(policy: RestartPolicy, end: JailEnd) -> bool:
    if policy is RestartPolicy.NO:
        return False
    if policy is RestartPolicy.ALWAYS:
        return True
    return end.failed


def restart_delay(quick_stops: int) -> float:
    """Seconds before restarting a jail that stopped ``quick_stops`` times in a row
    within ``STABLE`` seconds of its start (1: the first stop, at once)."""
    if quick_stops <= 1:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** (quick_stops - 2))


def dependency_ready(
    dep: JailRecord, health: HealthRecord | None, running: bool | None, boot: str
) -> bool:
    """Whether a jail waiting on ``dep`` may start. ``running`` is what this host's
    runtime says, None for another host's jail: then its health record, written
    by that host, is all there is."""
    if running is not None:
        if not running or not ran_this_boot(health, boot):
            return False
    elif health is None or health.state is Health.EXITED:
        return False
    if dep.healthcheck is None:
        return True
    return health is not None and health.state is Health.HEALTHY


def waiting_for(
    rec: JailRecord,
    jails: Mapping[str, JailRecord],
    health: Mapping[str, HealthRecord],
    running: Mapping[str, bool],
    boot: str,
) -> str | None:
    """What ``rec`` still waits for before it may start, or None. ``running`` has
    this host's jails; the others are another host's."""
    for name in rec.depends:
        dep = jails.get(name)
        if dep is None:
            return f"{name}, which does not exist"
        if not dependency_ready(dep, health.get(name), running.get(name), boot):
            return f"{name} to be {'healthy' if dep.healthcheck else 'running'}"
    return None
