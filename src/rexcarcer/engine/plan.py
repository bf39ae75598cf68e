"""``rex plan``: what ``rex up`` would do, as actions and command lines, computed
from the current state without changing anything."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from rexcarcer import ipam
from rexcarcer.engine import build as builder
from rexcarcer.engine import jails
from rexcarcer.engine.host import Host
from rexcarcer.errors import Conflict
from rexcarcer.rexfile.ast import Rexfile, Run
from rexcarcer.runtime.base import RuntimeKind


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # fetch, build, cached, address, clone, files, start, none
    description: str
    commands: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"action": self.kind, "description": self.description, "commands": self.commands}


def plan_up(host: Host, rexfile_: Rexfile, name: str) -> list[Action]:
    rec = jails.record(host, name)
    if rexfile_.base.is_url:
        from rexcarcer.base.receive import local_base_for

        fetched = local_base_for(host, rexfile_.base.ref, rexfile_.base.pin)
        if fetched is None:  # planning never touches the network
            return [
                Action("fetch", f"fetch, verify and receive the base {rexfile_.base.ref}"),
                Action("build", f"then build {len(rexfile_.steps)} step(s) and start {name}"),
            ]
        base = fetched
    else:
        base = jails.resolve_base(host, rexfile_)
    plans = builder.plan_build(host, rexfile_, base)
    image = builder.image_of(plans, base)
    if rec is not None and rec.get("status") == "ready":
        if rec.get("definition") != rexfile_.digest() or rec.get("image") != image:
            raise Conflict(
                f"jail {name!r} already exists with a different definition",
                hint=f"run `rex destroy {name}` first, or pick another name with --name",
            )
        if jails._is_running(host, name):
            return [Action("none", f"jail {name} is up to date and running; nothing to do")]
        return [Action("start", f"start jail {name}")]
    full = host.config.dataset
    actions = [_step_action(host, p, full) for p in plans]
    if rexfile_.ip is not None:
        holder = ipam.owner(host.store, rexfile_.ip.ip)
        if holder not in (None, name):
            raise Conflict(f"address {rexfile_.ip.ip} is already used by jail {holder!r}")
        actions.append(Action("address", f"claim the fixed address {rexfile_.ip}"))
    else:
        actions.append(Action("address", f"allocate an address from {host.config.subnet}"))
    actions.append(Action("clone", f"clone the image to jails/{name}",
                          [shlex.join(["zfs", "clone", "-o", f"rexcarcer:jail={name}",
                                       f"{full}/{image}", f"{full}/jails/{name}"])]))  # fmt: skip
    actions.append(Action("files", "write /etc/resolv.conf, /etc/hostname, /etc/rexcarcer/env"))
    actions.append(Action("start", f"start jail {name} ({host.config.runtime} runtime)",
                          _start_commands(host, name)))  # fmt: skip
    return actions


def _step_action(host: Host, plan: builder.StepPlan, full: str) -> Action:
    what = f"step {plan.index}: {plan.step.describe()}"
    if plan.cached:
        return Action("cached", f"{what} (cached as {full}/{plan.snapshot})")
    cmds = [shlex.join(["zfs", "clone", f"{full}/{plan.parent}", f"{full}/{plan.dataset}"])]
    if isinstance(plan.step, Run):
        cmds.append(shlex.join(["/bin/sh", "-c", plan.step.command]) + "   # inside the image")
    cmds.append(shlex.join(["zfs", "snapshot", f"{full}/{plan.snapshot}"]))
    return Action("build", what, cmds)


def _start_commands(host: Host, name: str) -> list[str]:
    if host.config.runtime is RuntimeKind.FREEBSD:
        conf = f"/etc/jail.conf.d/{name}.conf"
        return [shlex.join(["jail", "-f", conf, "-c", name])]
    if host.config.runtime is RuntimeKind.LINUX:
        from rexcarcer.engine.host import instance_token
        from rexcarcer.runtime.linux import netns_name

        ns = netns_name(instance_token(host.config), name)
        return [
            shlex.join(["ip", "netns", "add", ns]),
            f"nsenter --net=/run/netns/{ns} -- unshare --fork --pid --mount --uts --ipc ... chroot",
        ]
    return []
