"""``rex doctor``: each check is a probe returning ok and a one-line detail."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rexcarcer.config import Config
from rexcarcer.errors import CommandFailed, RexError
from rexcarcer.host import Host
from rexcarcer.run import Runner


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    data: Mapping[str, Any] | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.name, "ok": self.ok, "detail": self.detail}
        if self.data is not None:
            out["data"] = dict(self.data)
        return out


def run_checks(host: Host) -> list[Check]:
    config, runner = host.config, host.runner
    out = [Check("runtime", True, f"{config.runtime} (REX_RUNTIME)")]
    missing = [t for t in host.platform.tools() if shutil.which(t) is None]
    out.append(
        Check("tools", not missing, "missing: " + ", ".join(missing) if missing else "all found")
    )
    out.append(Check("root", os.geteuid() == 0, "running as root" if os.geteuid() == 0 else
                     "rex must run as root to create jails"))  # fmt: skip
    out.append(_zfs(config, runner))
    out.append(_state(config))
    out.append(_dns(config))
    out.append(_syslog(config))
    out.append(_firewall(host))
    out.append(_time(host))
    # the OS's own: FreeBSD's jail interface, devfs ruleset 4, local_unbound,
    # the pf anchors, racct (platform/freebsd_host.py)
    out += [Check(c.name, c.ok, c.detail) for c in host.platform.doctor_checks()]
    return out


def _firewall(host: Host) -> Check:
    """What PUBLISH and egress NAT rely on: on FreeBSD, pf.conf's three anchor
    lines (pf evaluates an anchor only where the main ruleset calls it,
    pf.conf(5) ANCHORS); the NAT setting itself."""
    config = host.config
    if config.nat:
        via = config.nat_interface or "every interface"
        nat = f"egress NAT on: {config.subnet} masqueraded out of {via}"
    else:
        nat = "egress NAT off (nat = false)"
    allow = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in config.publish_allow)
    ports = f"PUBLISH below 1024: {allow or 'none allowed'}"
    try:
        missing = host.platform.firewall.missing_hooks()
    except RexError as exc:
        return Check("firewall", False, f"{exc.message}; {nat}")
    if missing:
        return Check("firewall", False, "the loaded pf ruleset lacks "
                     f"{'; '.join(missing)}: PUBLISH and NAT are refused until /etc/pf.conf "
                     f"has them (docs/freebsd.md); {nat}")  # fmt: skip
    return Check("firewall", True, f"{nat}; {ports}")


def _dns(config: Config) -> Check:
    from rexcarcer.dns.hook import doctor_check

    ok, detail = doctor_check(config)
    return Check("dns", ok, detail)


def _zfs(config: Config, runner: Runner) -> Check:
    if shutil.which("zfs") is None:
        return Check("zfs", False, "zfs(8) not found")
    limit = config.zfs_timeout  # a stuck daemon fails the check instead of hanging it
    try:
        done = runner.run(["zfs", "list", "-H", "-o", "name", config.dataset], check=False,
                          timeout=limit)  # fmt: skip
        if done.ok:
            return Check("zfs", True, f"dataset {config.dataset} present")
        pool = config.dataset.split("/")[0]
        has_pool = runner.run(["zpool", "list", "-H", "-o", "name", pool], check=False,
                              timeout=limit).ok  # fmt: skip
    except RexError as exc:
        why = f"not answering within {limit:g} s (zfs_timeout)" if isinstance(
            exc, CommandFailed) and exc.timed_out else exc.message  # fmt: skip
        return Check("zfs", False, why)
    if has_pool:
        return Check("zfs", True, f"pool {pool} present; {config.dataset} is created on first use")
    return Check("zfs", False, f"pool {pool} not found (REX_DATASET={config.dataset}): "
                 f"{done.stderr.strip()}")  # fmt: skip


def _state(config: Config) -> Check:
    try:
        config.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Check("state", False, f"{config.root}: {exc}")
    ok = os.access(config.root, os.W_OK)
    if not ok:
        return Check("state", False, f"{config.root} not writable")
    if config.etcd or not config.db_path.exists():
        return Check("state", True, f"{config.root} writable")
    return _state_db(config)


def _state_db(config: Config) -> Check:
    """The embedded store opens and passes its check; else how to recover."""
    from rexcarcer.state.backup import backups
    from rexcarcer.state.sqlite import SqliteStore

    try:
        SqliteStore(config.db_path, timeout=5.0, backup=False).close()
    except RexError as exc:
        return Check("state", False, f"{exc.message}; {exc.hint or ''}")
    have = backups(config.db_path)
    newest = f"newest backup {have[0].path.name}" if have else "no backup yet"
    return Check("state", True, f"{config.db_path} passes its check; {newest}")


def _time(host: Host) -> Check:
    """Jails share the host's clock; certificates and log times depend on it. The
    daemon is asked whether it is synchronised, and by how much the clock is off
    (platform/timesync.py)."""
    state = host.platform.time_service().status()
    return Check("time", state.synced, state.detail, state.as_json())


def _syslog(config: Config) -> Check:
    """The jails' log collector (rsyslogd; logs/service.py)."""
    from rexcarcer.logs import service

    if not service.available():
        return Check("syslog", False, "rsyslogd not found: jail logs cannot be collected "
                     "(install rsyslog)")  # fmt: skip
    paths = service.paths_for(config)
    pid = service.collector_pid(paths)
    if pid is None:
        return Check("syslog", True, "collector not running: jail logs are not collected; "
                     "run `rex host setup` or `rex host serve`")  # fmt: skip
    return Check("syslog", True, f"collector rsyslogd {pid} on {config.host_address}:514, "
                 f"logs in {paths.logs}")  # fmt: skip
