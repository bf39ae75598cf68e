"""``rex doctor``: each check is a probe returning ok and a one-line detail."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from rexcarcer.config import Config
from rexcarcer.errors import RexError
from rexcarcer.run import Runner, SubprocessRunner
from rexcarcer.runtime.base import RuntimeKind


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


TOOLS = {
    RuntimeKind.LINUX: ("zfs", "ip", "unshare", "nsenter", "chroot", "mount"),
    RuntimeKind.FREEBSD: ("zfs", "jail", "jls", "jexec"),
    RuntimeKind.FAKE: (),
}


def run_checks(config: Config, runner: Runner | None = None) -> list[Check]:
    runner = runner or SubprocessRunner()
    out = [Check("runtime", True, f"{config.runtime} (REX_RUNTIME)")]
    missing = [t for t in TOOLS[config.runtime] if shutil.which(t) is None]
    out.append(
        Check("tools", not missing, "missing: " + ", ".join(missing) if missing else "all found")
    )
    out.append(Check("root", os.geteuid() == 0, "running as root" if os.geteuid() == 0 else
                     "rex must run as root to create jails"))  # fmt: skip
    out.append(_zfs(config, runner))
    out.append(_state(config))
    return out


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
    return Check("state", ok, f"{config.root} {'writable' if ok else 'not writable'}")
