"""Become a Linux jail's process with a jail's capabilities.

A jail's root is the host's root in every namespace rex makes for it, and a
root that keeps every capability can mknod a disk, mount, load a module,
change its addresses or raise its own rlimits. A FreeBSD jail's root cannot
(jail(8): allow.mount, allow.raw_sockets, allow.set_hostname, devfs rules,
all off by default). This program is the last host code that runs before a
jail's own: it drops from the capability bounding set everything a jail's
root does not get, clears the ambient and inheritable sets, and execs the
jail's program, so every process in the jail, and everything they exec,
lacks those capabilities for good (capabilities(7): "the bounding set ...
can only be lowered").

It runs as ``python3 -I -S jailenter.py MODE ...`` (standard library only,
no site-packages, no environment variables read, the script's own directory
not on sys.path), in two modes:

``init COMMAND``
    The end of a jail's start (runtime/linux.py SETUP), run in the jail's
    root directory with the host's root still the process's root (which is
    how this interpreter could start): ``pivot_root(".", ".")`` then
    ``umount2(".", MNT_DETACH)``, pivot_root(2)'s documented idiom for making
    the current directory the root (its "NOTES"), then drops and execs
    ``/bin/sh -c COMMAND`` in the jail's root. glibc has no pivot_root()
    wrapper (pivot_root(2)), so it is syscall(2) by number.

``exec PID ARGV...``
    ``rex exec``: what ``nsenter --target PID --pid --mount --uts --ipc --net
    --cgroup --root --wd`` did: join the namespaces of the jail's init, take its root,
    fork (a new pid namespace holds only the children of the joiner,
    setns(2)), and in the child drop and exec ARGV; the parent waits and
    exits with the child's status (128+N for a signal, as a shell does).

Capabilities kept are those a FreeBSD jail's root has in substance: own
files (chown, dac_override, fowner, fsetid), change user and group (setuid,
setgid), signal its processes (kill), bind ports below 1024
(net_bind_service), chroot, set file capabilities and lower its own sets
(setfcap, setpcap) and write audit records (audit_write). Not kept, among
others: sys_admin (mount, sethostname, namespaces' setns), mknod, net_admin
(addresses, routes, firewall), net_raw (raw sockets: forged source
addresses), sys_module, sys_rawio, sys_ptrace, sys_resource (would lift the
rlimits rex sets), sys_time, sys_boot, dac_read_search (open_by_handle_at:
a path to the host's files), bpf, perfmon.
"""

from __future__ import annotations

# CPython's C half of the signal module: signal.py wraps it in enums, and
# importing enum (with functools and collections) costs this short-lived
# process more than its other imports together (`rex exec`, cli/fast.py).
import _signal  # type: ignore[import-not-found]
import ctypes
import os
import sys

# linux/capability.h
KEEP = {
    0: "chown",
    1: "dac_override",
    3: "fowner",
    4: "fsetid",
    5: "kill",
    6: "setgid",
    7: "setuid",
    8: "setpcap",
    10: "net_bind_service",
    18: "sys_chroot",
    29: "audit_write",
    31: "setfcap",
}
PR_CAPBSET_READ, PR_CAPBSET_DROP = 23, 24  # linux/prctl.h
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
MNT_DETACH = 2  # sys/mount.h
# __NR_pivot_root from the kernel's syscall tables (arch/*/entry/syscalls,
# include/uapi/asm-generic/unistd.h for the architectures that use it)
SYS_PIVOT_ROOT = {
    "x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41,
    "ppc64le": 203, "ppc64": 203, "s390x": 217, "i686": 217, "i386": 217,
    "armv7l": 218, "armv6l": 218,
}  # fmt: skip
# cgroup: the jail's cgroup namespace (unshare --cgroup, runtime/linux.py), so
# an exec'd process sees the jail's groups as "/" as its init does
# (cgroup_namespaces(7)); joined after the runner moved us into those groups
NAMESPACES = ("ipc", "uts", "net", "pid", "cgroup", "mnt")  # mnt last: it changes our root

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def drop_capabilities() -> None:
    """Lower the bounding set to KEEP, clear ambient and inheritable, and keep
    only KEEP in this process's effective and permitted sets."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0:  # EINVAL past the last one
        if cap not in KEEP and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            _fail(f"cannot drop capability {cap}")
        cap += 1
    # Linux < 4.3 has no ambient set; nothing to clear there
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        _fail("capget")
    for i in (0, 1):
        mask = sum(1 << (c - 32 * i) for c in KEEP if 32 * i <= c < 32 * (i + 1))
        data[i].effective &= mask
        data[i].permitted &= mask
        data[i].inheritable = 0
    if _libc.capset(ctypes.byref(header), data) != 0:
        _fail("capset")


def _exec(argv: list[str]) -> None:
    """execvp(3) by hand: os.execvp imports a module on its way, and after the
    pivot the host's standard library is out of reach."""
    name = argv[0]
    dirs = [""] if "/" in name else os.environ.get("PATH", "/bin:/usr/bin").split(":")
    error: OSError = FileNotFoundError(2, os.strerror(2))
    for d in dirs:
        try:
            os.execv(f"{d or '.'}/{name}" if d or "/" not in name else name, argv)
        except FileNotFoundError:
            continue
        except OSError as exc:
            error = exc  # as execvp: an EACCES is worth reporting over ENOENT
    sys.stderr.write(f"rex: cannot run {name} in the jail: {error.strerror}\n")
    os._exit(127 if isinstance(error, FileNotFoundError) else 126)


def init(command: str) -> None:
    machine = os.uname().machine
    if machine not in SYS_PIVOT_ROOT:
        raise OSError(0, f"no pivot_root system call number known for {machine}")
    if _libc.syscall(SYS_PIVOT_ROOT[machine], b".", b".") != 0:
        _fail("cannot make the jail's directory the root")
    if _libc.umount2(b".", MNT_DETACH) != 0:
        _fail("cannot detach the host's root")
    os.chdir("/")
    drop_capabilities()
    _exec(["/bin/sh", "-c", command])


def _wait(child: int) -> int:
    while True:
        try:
            _, status = os.waitpid(child, os.WUNTRACED)
        except ChildProcessError:
            return 1
        if os.WIFSTOPPED(status):  # the child stopped (^Z): stop too, as nsenter does
            os.kill(os.getpid(), _signal.SIGSTOP)
            os.kill(child, _signal.SIGCONT)
            continue
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def enter(pid: int, argv: list[str]) -> int:
    proc = f"/proc/{pid}"
    fds = [os.open(f"{proc}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
    root = os.open(f"{proc}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for ns, fd in zip(NAMESPACES, fds, strict=True):
        if _libc.setns(fd, 0) != 0:
            _fail(f"cannot join the jail's {ns} namespace")
        os.close(fd)
    os.fchdir(root)
    os.chroot(".")
    os.chdir("/")
    os.close(root)
    child = os.fork()
    if child == 0:
        drop_capabilities()
        _exec(argv)
    # the caller stops us with SIGTERM (or the terminal with SIGHUP): pass it on
    for sig in (_signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(sig, lambda s, _f: os.kill(child, s))
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # ^C reaches the child through the tty
    return _wait(child)


def main(args: list[str]) -> int:
    try:
        if len(args) == 2 and args[0] == "init":
            init(args[1])
        elif len(args) >= 3 and args[0] == "exec" and args[1].isdigit():
            return enter(int(args[1]), args[2:])
        else:
            sys.stderr.write("usage: jailenter.py init COMMAND | exec PID ARGV...\n")
            return 2
    except OSError as exc:
        sys.stderr.write(f"rex: entering the jail failed: {exc}\n")
        return 125
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
