"""FreeBSD: what a jail needs around ``jail -c`` and ``jail -r`` besides its
jail.conf: its LIMIT rules (rctl(8), limits/rctl.py) and its SECRET tmpfs
(runtime/secretfs.py). runtime/freebsd.py calls these three steps:

``before_create`` (before ``jail -c``)
    refuse LIMIT while ``kern.racct.enable`` is off (a loader tunable: the hint
    says so); mount a tmpfs on the jail's /run/secrets and write the secrets
    into it through jailfs; add one ``deny`` rule per limit. rctl(8) rules name
    the jail, not its ID, and may be added before it exists, so its first
    process is already limited.
``after_remove`` (after ``jail -r``, and for a jail found not running)
    unmount every tmpfs below the jail's root, as the kernel's mount table
    (``mount -p``) lists them, not by a path the jail may have changed; remove
    the jail's rules, which would otherwise outlive it and limit the next jail
    of that name.
``usage``
    ``rctl -u jail:NAME``, {} while accounting is off.

Why rex mounts the tmpfs itself instead of a ``mount`` line in jail.conf:
jail(8) mounts such a line and then, in the same invocation, runs exec.prestart,
creates the jail and runs exec.start (usr.sbin/jail/jail.c, startcommands[]:
IP_MOUNT ... IP_EXEC_PRESTART, IP__OP, ... IP_EXEC_START): there is no moment
in which rex could write the files after the mount and before /etc/rc runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from rexcarcer.errors import CommandFailed, RuntimeBackendError
from rexcarcer.limits import LimitError
from rexcarcer.limits import rctl as rules
from rexcarcer.limits.rctl import Rctl
from rexcarcer.run import Completed, Runner
from rexcarcer.runtime import secretfs
from rexcarcer.runtime.base import JailSpec

MOUNT_LIST = ["mount", "-p"]
# runtime/freebsd.py writes `path = "ROOT";` with a plain path (check_root)
_PATH_LINE = re.compile(r'^\tpath = "([^"\\]*)";$', re.M)


def conf_root(conf_text: str | None) -> Path | None:
    """The jail's root as its rex-written jail.conf names it, or None."""
    m = _PATH_LINE.search(conf_text or "")
    return Path(m.group(1)) if m else None


class JailExtras:
    def __init__(self, runner: Runner, *, is_mount: Callable[[Path], bool]) -> None:
        self.runner = runner
        self.rctl = Rctl(runner)
        self.is_mount = is_mount

    def commands(self, spec: JailSpec) -> list[list[str]]:
        """What ``before_create`` runs that changes the host, in order (rex plan)."""
        out = []
        if spec.secrets:
            inside = secretfs.inside_path(spec.root)
            out.append(secretfs.freebsd_mount_argv(spec.root / inside.lstrip("/")))
        out += [rules.add_argv(r) for r in rules.rules(spec.name, spec.limits)]
        return out

    def before_create(self, spec: JailSpec) -> None:
        if spec.limits:
            self.rctl.ensure_enabled()  # before anything changes
        if spec.secrets:
            secretfs.check_sizes(spec.secrets)
            inside = secretfs.mountpoint(spec.root)
            directory = spec.root / inside.lstrip("/")
            self._run(secretfs.freebsd_mount_argv(directory), "cannot mount the secrets tmpfs")
            if not self.is_mount(directory):
                raise RuntimeBackendError(
                    f"{directory} is not a mount point after mount(8); the secrets are not written"
                )
            secretfs.write(spec.root, inside, spec.secrets)
        for rule in rules.rules(spec.name, spec.limits):
            try:
                self.runner.run(rules.add_argv(rule))
            except CommandFailed as exc:
                raise LimitError(
                    f"rctl refused {rule}: {exc.stderr}", hint=rules.ENABLE_HINT
                ) from exc

    def after_remove(self, name: str, root: Path | None) -> None:
        if root is not None:
            listed = self._run(MOUNT_LIST, "cannot list mounts").stdout
            for point in secretfs.tmpfs_below(listed, root):
                self._run(secretfs.freebsd_umount_argv(point), f"cannot unmount {point}")
        self.rctl.remove(name)

    def usage(self, name: str) -> dict[str, int]:
        try:
            return self.rctl.usage(name)
        except LimitError:
            return {}  # accounting is off, or the jail is gone

    def _run(self, argv: list[str], what: str) -> Completed:
        try:
            return self.runner.run(argv)
        except CommandFailed as exc:
            raise RuntimeBackendError(f"{what}: {exc.stderr or exc.message}") from exc
