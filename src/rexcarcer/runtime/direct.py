"""``rex exec`` straight into a Linux jail this host runs, from the calling process.

The engine's path (service/local.py, engine/lifecycle.py ``exec_in``,
runtime/linux.py ``exec``) opens the store, finds the record and starts
``python3 -I -S jailenter.py exec PID ARGV`` under the runner: two
interpreters and a store before the user's command runs. Everything ``exec``
needs is in the jail's run file, which ``LinuxRuntime.start`` writes under the
state directory (root's, never the jail's): the init's PID and start time and
the jail's environment (``exec_env``). So, as root and for a jail whose run
file has them:

1. the init is checked alive by PID and start time (/proc/PID/stat field 22,
   proc(5)), as ``LinuxRuntime._running_pid`` does;
2. when the init is in rex's cgroups for this jail (/proc/PID/cgroup, cgroups(7),
   names ending in ``/rexcarcer/NAME``), this process joins the same groups
   (limits/cgroup.py ``procs_files``), so the command runs inside the jail's
   limits from its first instruction;
3. jailenter.py's ``enter`` runs in this process: setns(2) into the init's
   namespaces, its root, fork, and in the child the capability drop and the
   exec of the command; this process waits and exits with its status.

Anything else (no run file, a dead init, an older run file without
``exec_env``) returns to the caller, which takes the engine's path and its
errors. Only the standard library is imported before step 3, and nothing at
all after the setns: the host's Python path is then resolved inside the jail's
root, which the jail writes, so the parent ends with ``os._exit`` and never
imports or finalizes there.
"""

from __future__ import annotations

import json
import os
import sys

LOGIN_SHELL = ("/bin/sh", "-l")  # `rex console`: the same on both paths
CGROUP_PREFIX = "rexcarcer"  # limits/cgroup.py PREFIX
ENTER_FAILED = 125  # jailenter.py: entering the jail failed
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def plausible_name(name: str) -> bool:
    """A jail name's shape (names.py ``jail_name_problem``: one lower-case DNS
    label); anything else goes to the engine, which explains what is wrong."""
    return 0 < len(name) <= 63 and set(name) <= _NAME_CHARS and name[0] != "-" != name[-1]


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the parenthesised command name, which
    may hold anything), or None when the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def read_run(run_dir: str, name: str) -> tuple[int, dict[str, str]] | None:
    """(init PID, environment) from the jail's run file when its init lives."""
    try:
        with open(os.path.join(run_dir, f"{name}.json"), "rb") as f:
            info = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    pid, start, env = info.get("init_pid"), info.get("init_start"), info.get("exec_env")
    if not (isinstance(pid, int) and isinstance(start, int) and isinstance(env, dict)):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        return None
    if start_time(pid) != start:  # PID plus start time name one process for good
        return None
    limits = info.get("limits")
    if isinstance(limits, dict) and limits.get("openfiles") is not None:
        # LIMIT openfiles is an rlimit the engine's runner sets in the child
        # (limits/cgroup.py rlimits_for): that jail takes the engine's path
        return None
    return pid, env


def cgroup_prefix(run_dir: str) -> str:
    """The jail groups' parent for the state directory whose run directory is
    ``run_dir``: ``rexcarcer/rex-<token>`` (platform/linux.py ``cgroup_prefix``
    and ``instance_token``; a unit test holds the two equal)."""
    import hashlib

    root = os.path.dirname(os.path.normpath(run_dir))
    return f"{CGROUP_PREFIX}/rex-{hashlib.sha256(root.encode()).hexdigest()[:6]}"


def in_jail_cgroup(pid: int, name: str, prefix: str) -> bool | None:
    """Whether the init is in a group of rex's for this jail (True), in none of
    rex's (False), or in one of rex's that is not where this path would put the
    command (None: the caller takes the engine's path rather than guess)."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return False
    mine = f"/{prefix}/{name}"
    if any(line.endswith(mine) for line in lines):
        return True
    return None if any(f"/{CGROUP_PREFIX}/" in line for line in lines) else False


def as_jailenter_passes(env: dict[str, str]) -> dict[str, str]:
    """``env`` as the command receives it from ``python3 -I -S jailenter.py``,
    the engine's path: that interpreter coerces a C or POSIX locale to C.UTF-8
    and exports ``LC_CTYPE=C.UTF-8`` to what it execs (PEP 538, "Legacy C
    locale coercion"; the C.UTF-8 locale is built into glibc since 2.35). The
    jail's init gets it the same way, so a command run here must too."""
    if env.get("LC_ALL"):
        return env
    ctype = env.get("LC_CTYPE") or env.get("LANG") or ""
    if ctype not in ("", "C", "POSIX"):
        return env
    return {**env, "LC_CTYPE": "C.UTF-8"}


def join_cgroups(name: str, prefix: str) -> None:
    from rexcarcer.limits.cgroup import CgroupDriver

    me = str(os.getpid()).encode()
    for path in CgroupDriver(prefix=prefix).procs_files(name):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, me)
        finally:
            os.close(fd)


def enter_if_local(run_dir: str, name: str, argv: list[str]) -> None:
    """Run ``argv`` in the jail and ``os._exit`` with its status (128+N for a
    signal); return without doing anything when the jail is not a running
    Linux jail of this host with a run file that says how to enter it."""
    if not argv or not plausible_name(name):
        return
    found = read_run(run_dir, name)
    if found is None:
        return
    pid, env = found
    prefix = cgroup_prefix(run_dir)
    grouped = in_jail_cgroup(pid, name, prefix)
    if grouped is None:
        return
    if grouped:
        join_cgroups(name, prefix)
    from rexcarcer.runtime import jailenter

    sys.stdout.flush()
    sys.stderr.flush()
    # the command's environment is the jail's alone, as the engine's path gives it
    # (runtime/base.py jail_env); jailenter's exec looks the command up in its PATH
    os.environ.clear()
    os.environ.update(as_jailenter_passes(env))
    try:
        status = jailenter.enter(pid, argv)
    except OSError as exc:
        os.write(2, f"rex: entering the jail failed: {exc}\n".encode(errors="replace"))
        os._exit(ENTER_FAILED)
    os._exit(status)
