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
   names ending in ``/rexcarcer/NAME``), this process joins the same groups,
   found where /proc/self/mountinfo says each hierarchy is mounted (not through
   limits/cgroup.py, whose import alone costs more than the rest of this path),
   so the command runs inside the jail's limits from its first instruction;
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


def init_cgroups(pid: int) -> list[tuple[str, str]]:
    """(controllers, path) per hierarchy the init is in, from /proc/PID/cgroup
    (cgroups(7): ``ID:CONTROLLERS:PATH``; "" controllers on cgroup2)."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if sep and sep2:
            out.append((controllers, path))
    return out


def in_jail_cgroup(pid: int, name: str, prefix: str) -> bool | None:
    """Whether the init is in a group of rex's for this jail (True), in none of
    rex's (False), or in one of rex's that is not where this path would put the
    command (None: the caller takes the engine's path rather than guess)."""
    paths = [path for _, path in init_cgroups(pid)]
    mine = f"/{prefix}/{name}"
    if any(path.endswith(mine) for path in paths):
        return True
    return None if any(f"/{CGROUP_PREFIX}/" in path for path in paths) else False


def _unescape(field: str) -> str:
    """A mountinfo path field: space, tab, newline and backslash are written as
    octal escapes (proc(5), /proc/pid/mountinfo; fs/proc_namespace.c)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def hierarchy_mounts(mountinfo: str) -> dict[str, str]:
    """Where each cgroup hierarchy is mounted, from /proc/self/mountinfo (proc(5)):
    "" for cgroup2, else the controllers as /proc/PID/cgroup names them, taken
    from the super options of a ``cgroup`` mount (``rw,cpu,cpuacct`` ->
    ``cpu,cpuacct``; ``name=systemd`` kept; sorted, as both lists follow the
    kernel's controller order but need not). Only mounts of the hierarchy's root
    count; the first mount point wins."""
    out: dict[str, str] = {}
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        if dash < 5 or len(fields) < dash + 4 or fields[3] != "/":
            continue
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if fstype == "cgroup2":
            key = ""
        elif fstype == "cgroup":
            key = _key([o for o in options if o not in _MOUNT_OPTIONS
                        and not o.startswith("release_agent=")])  # fmt: skip
        else:
            continue
        out.setdefault(key, _unescape(fields[4]))
    return out


def _key(controllers: list[str]) -> str:
    return ",".join(sorted(controllers))


# super options of a v1 cgroup mount that are not controllers (kernel/cgroup/cgroup-v1.c
# cgroup1_show_options)
_MOUNT_OPTIONS = frozenset(
    ("rw", "ro", "noprefix", "xattr", "clone_children", "cpuset_v2_mode", "favordynmods")
)


def procs_files(pid: int, name: str, prefix: str, mountinfo: str) -> list[str] | None:
    """The ``cgroup.procs`` files of the groups of rex's the init is in, one per
    hierarchy, or None when one of them cannot be found (the engine's path
    then reports it: limits/cgroup.py ``procs_files``)."""
    mounts = hierarchy_mounts(mountinfo)
    mine = f"/{prefix}/{name}"
    out = []
    for controllers, path in init_cgroups(pid):
        if not path.endswith(mine):
            continue
        mount = mounts.get(_key(controllers.split(",")) if controllers else "")
        if mount is None:
            return None
        procs = os.path.join(mount, path.lstrip("/"), "cgroup.procs")
        if not os.path.isfile(procs):
            return None
        out.append(procs)
    return out


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


def join_cgroups(files: list[str]) -> None:
    me = str(os.getpid()).encode()
    for path in files:
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
        try:
            with open("/proc/self/mountinfo", "rb") as f:
                mountinfo = f.read().decode(errors="replace")
        except OSError:
            return
        files = procs_files(pid, name, prefix, mountinfo)
        if not files:
            return
        join_cgroups(files)
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
