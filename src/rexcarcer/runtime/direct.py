"""``rex exec`` straight into a Linux jail this host runs, from the calling process.

The engine's path (service/local.py, engine/lifecycle.py ``exec_in``,
runtime/linux.py ``exec``) opens the store, finds the record and starts
``python3 -I -S jailenter.py exec PID ARGV`` under the runner: two
interpreters and a store before the user's command runs. Everything ``exec``
needs is in the jail's exec file, which ``LinuxRuntime.start`` writes beside
its run file under the state directory (root's, never the jail's): the init's
PID and start time, the jail's environment and the ``cgroup.procs`` files of
the groups its first process joined. So, as root and for a jail
whose exec file has them:

1. the init is checked alive by PID and start time (/proc/PID/stat field 22,
   proc(5)), as ``LinuxRuntime._running_pid`` does;
2. this process joins the same groups (cgroupjoin.py: on v1 hierarchies only
   its one thread, which is what forks the command, without the global lock
   a whole-process move waits on), so the command runs inside the jail's
   limits from its first instruction; the files come from the exec file rather
   than from limits/cgroup.py, whose import alone cost more than the rest of
   this path;
3. jailenter.py's ``enter`` runs in this process: setns(2) into the init's
   namespaces, its root, fork, and in the child the capability drop and the
   exec of the command; this process waits and exits with its status.

Anything else (no exec file, a dead init, a group that is gone) returns to
the caller, which takes the engine's path and its errors. Only the standard
library is imported before step 3, and nothing at all after the setns: the
host's Python path is then resolved inside the jail's root, which the jail
writes, so the parent ends with ``os._exit`` and never imports or finalizes
there.
"""

from __future__ import annotations

import os
import sys

LOGIN_SHELL = ("/bin/sh", "-l")  # `rex console`: the same on both paths
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


EXEC_MAGIC = b"rex-exec 1"


def exec_record(pid: int, start: int, env: dict[str, str], procs: list[str]) -> bytes:
    """The jail's ``NAME.exec`` file: what this path needs, NUL-separated (no
    environment name or value, no path, can hold a NUL), so that reading it
    needs neither ``json`` nor the ``re`` that json imports: the magic, the
    init's PID and start time, the count of environment entries, each
    ``NAME=VALUE``, then each ``cgroup.procs`` file."""
    fields = [EXEC_MAGIC, b"%d" % pid, b"%d" % start, b"%d" % len(env)]
    fields += [f"{k}={v}".encode() for k, v in env.items()]
    fields += [p.encode() for p in procs]
    return b"\0".join(fields)


def parse_exec(data: bytes) -> tuple[int, int, dict[str, str], list[str]] | None:
    """``exec_record``'s fields back, or None for anything else."""
    fields = data.split(b"\0")
    if len(fields) < 4 or fields[0] != EXEC_MAGIC:
        return None
    try:
        pid, start, count = int(fields[1]), int(fields[2]), int(fields[3])
        text = [f.decode() for f in fields[4:]]
    except (ValueError, UnicodeDecodeError):
        return None
    if count < 0 or count > len(text):
        return None
    env: dict[str, str] = {}
    for entry in text[:count]:
        key, eq, value = entry.partition("=")
        if not eq or not key:
            return None
        env[key] = value
    return pid, start, env, text[count:]


def read_run(run_dir: str, name: str) -> tuple[int, dict[str, str], list[str]] | None:
    """(init PID, environment, the cgroup.procs files the init joined) from the
    jail's exec file (runtime/linux.py writes it beside the run file, and not
    for a jail with ``LIMIT openfiles``: an rlimit the engine's runner sets in
    the child, limits/cgroup.py rlimits_for) when its init lives."""
    try:
        with open(os.path.join(run_dir, f"{name}.exec"), "rb") as f:
            found = parse_exec(f.read(1 << 20))
    except OSError:
        return None
    if found is None:
        return None
    pid, start, env, procs = found
    if start_time(pid) != start:  # PID plus start time name one process for good
        return None
    return pid, env, procs


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


def join_cgroups(files: list[str]) -> bool:
    """Move this process into the groups whose ``cgroup.procs`` files are
    ``files``; False, with nothing joined, when one of them is gone (the
    engine's path then says what is wrong: limits/cgroup.py ``procs_files``)."""
    if not all(os.path.isfile(path) for path in files):
        return False
    from rexcarcer import cgroupjoin

    for path in files:
        cgroupjoin.join(path)
    return True


def enter_if_local(run_dir: str, name: str, argv: list[str]) -> None:
    """Run ``argv`` in the jail and ``os._exit`` with its status (128+N for a
    signal); return without doing anything when the jail is not a running
    Linux jail of this host with an exec file that says how to enter it."""
    if not argv or not plausible_name(name):
        return
    found = read_run(run_dir, name)
    if found is None:
        return
    pid, env, procs = found
    if not join_cgroups(procs):
        return
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
