"""``rex doctor``: each check is a probe returning ok and a one-line detail."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from rexcarcer.config import Config
from rexcarcer.errors import RexError
from rexcarcer.host import Host
from rexcarcer.run import Runner


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


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
    out.append(_time(runner))
    return out


def _dns(config: Config) -> Check:
    from rexcarcer.dns.hook import doctor_check

    ok, detail = doctor_check(config)
    return Check("dns", ok, detail)


def _zfs(config: Config, runner: Runner) -> Check:
    if shutil.which("zfs") is None:
        return Check("zfs", False, "zfs(8) not found")
    try:
        done = runner.run(["zfs", "list", "-H", "-o", "name", config.dataset], check=False)
    except RexError as exc:
        return Check("zfs", False, exc.message)
    if done.ok:
        return Check("zfs", True, f"dataset {config.dataset} present")
    pool = config.dataset.split("/")[0]
    has_pool = runner.run(["zpool", "list", "-H", "-o", "name", pool], check=False).ok
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


# Process names (as ps prints them: at most 15 characters on Linux) of daemons
# that keep the clock: ntpd (ntp.org, ntpsec, FreeBSD's base ntpd, OpenNTPD's
# "ntpd" too), chronyd, openntpd on some systems, systemd-timesyncd.
TIME_DAEMONS = ("ntpd", "chronyd", "openntpd", "systemd-timesyn", "timesyncd")


def time_keepers(ps_output: str) -> list[str]:
    """The clock daemons in the output of ``ps -A -o comm=`` (one name a line)."""
    names = {line.strip().rsplit("/", 1)[-1] for line in ps_output.splitlines()}
    return sorted(n for n in names if n in TIME_DAEMONS)


def _time(runner: Runner) -> Check:
    """Jails share the host's clock; certificates and log times depend on it."""
    try:
        done = runner.run(["ps", "-A", "-o", "comm="], check=False)
    except RexError as exc:
        return Check("time", False, exc.message)
    if not done.ok:
        return Check("time", False, f"ps failed: {done.stderr.strip()}")
    keepers = time_keepers(done.stdout)
    if keepers:
        return Check("time", True, f"kept by {', '.join(keepers)}")
    return Check("time", False, "no ntpd, chronyd, openntpd or systemd-timesyncd is running: "
                 "jails share this clock, and their certificates depend on it")  # fmt: skip


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
