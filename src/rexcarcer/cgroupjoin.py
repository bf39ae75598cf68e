"""Moving the calling thread into a cgroup, as cheaply as the kernel allows.

Both places that put a process into a jail's groups use it: the runner's child
between fork and exec (run.py) and ``rex exec``'s direct path
(runtime/direct.py), each with one thread that then execs or forks what runs
in the jail, so moving that thread is moving everything the jail gets.

On a v1 hierarchy a write of a PID to ``cgroup.procs`` moves a whole thread
group and takes the global ``cgroup_threadgroup_rwsem`` for writing, which
waits for an RCU grace period (kernel/cgroup/cgroup.c ``cgroup_attach_lock``;
10-20 ms on the 2-core test machines). A write of ``0`` (the caller itself)
to the group's ``tasks`` file moves one thread, which skips that lock
(``cgroup_procs_write_start``: "If we migrate a single thread, we don't care
about threadgroup stability. If the thread is `current`, it won't exit(2)
under our hands ... Therefore, we can skip the global lock"): 0.1 ms on the
6.18 kernels of the test machines. cgroup v2 has no ``tasks`` file (only threaded groups take
threads, in ``cgroup.threads``): there the PID goes to ``cgroup.procs``.
"""

from __future__ import annotations

import os


def join(procs: str) -> None:
    """Move the calling thread into the group whose ``cgroup.procs`` file is
    ``procs``; an OSError when it cannot."""
    try:  # a v1 group: the thread, without the global lock
        fd = os.open(os.path.join(os.path.dirname(procs), "tasks"), os.O_WRONLY)
        data = b"0"
    except FileNotFoundError:  # v2
        fd = os.open(procs, os.O_WRONLY)
        data = str(os.getpid()).encode()
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
