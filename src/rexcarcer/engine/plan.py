"""``rex plan``: what ``rex up`` would do, as actions and command lines, computed
from the current state without changing anything.

The command lines come from the same builders the drivers execute
(``Storage.clone_argv``, ``Runtime.start_commands``, ``Runtime.build_commands``),
so the plan shows exactly what ``rex up`` would run on this host's platform.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from rexcarcer import ipam
from rexcarcer.engine import build as builder
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict
from rexcarcer.model.base import BaseInfo
from rexcarcer.model.jail import JailRecord
from rexcarcer.model.plan import Action, FileWrite, argvs
from rexcarcer.rexfile.ast import IPInterface, Rexfile, Run
from rexcarcer.runtime.base import HostFile, JailSpec

# the port the jails' syslog is forwarded to (logs/collector.py LOG_PORT; the
# engine imports no feature)
LOG_PORT = 514


def plan_up(eng: Engine, rexfile: Rexfile, name: str) -> list[Action]:
    host = eng.host
    rec = jails.record(eng, name)
    if rec is not None:
        jails.ensure_local(eng, rec)
    base = eng.bases.local(host, rexfile.base)
    if base is None:  # planning never touches the network
        return [
            Action("fetch", f"fetch, verify and receive the base {rexfile.base.ref}"),
            Action("build", f"then build {len(rexfile.steps)} step(s) and start {name}"),
        ]
    plans = builder.plan_build(host, rexfile, base)
    image = builder.image_of(plans, base)
    if rec is not None and rec.ready:
        return _existing(eng, rexfile, rec, image)
    actions = [_step_action(eng, rexfile, base, p) for p in plans]
    address = _address(eng, rexfile, name, actions)
    new = jails.new_record(eng, rexfile, name).replace(address=address, image=image)
    clone = host.storage.clone_argv(image, f"jails/{name}", jails.clone_props(new))
    actions.append(Action("clone", f"clone the image to jails/{name}", argvs([clone])))
    root = host.storage.mountpoint("jails") / name
    spec = _spec(eng, new, root, base)
    actions.append(Action("files", "write the jail's configuration files",
                          notes=_file_notes(eng), files=jail_writes(eng, spec, new)))  # fmt: skip
    actions.append(_start(eng, spec, f"start jail {name} ({host.platform.kind} platform)"))
    return actions


def jail_writes(eng: Engine, spec: JailSpec, rec: JailRecord) -> tuple[FileWrite, ...]:
    """The files rex writes into the jail's root at every start, with content."""
    target = spec.gateway or eng.host.config.host_address
    entries = [*jails.jail_files(eng, spec, rec.enable),
               *eng.host.platform.syslog_files(target, LOG_PORT)]  # fmt: skip
    return tuple(FileWrite(f"{spec.root}{inside}", mode, data.decode()) for inside, data, mode
                 in entries)  # fmt: skip


def _file_notes(eng: Engine) -> tuple[str, ...]:
    return (
        "/etc/ssl/rc/host.key (0600), host.crt, cluster.crt and the jail's trust store: "
        "its identity from the cluster CA, issued at start when needed (not shown)",
    )


def host_writes(files: list[HostFile]) -> tuple[FileWrite, ...]:
    return tuple(FileWrite(str(f.path), f.mode, f.content) for f in files)


def _start(eng: Engine, spec: JailSpec, what: str) -> Action:
    runtime = eng.host.runtime
    return Action("start", what, argvs(runtime.start_commands(spec)),
                  files=host_writes(runtime.start_files(spec)))  # fmt: skip


def _existing(eng: Engine, rexfile: Rexfile, rec: JailRecord, image: str) -> list[Action]:
    if rec.definition != rexfile.digest() or rec.image != image:
        raise Conflict(
            f"jail {rec.name!r} already exists with a different definition",
            hint=f"run `rex destroy {rec.name}` first, or pick another name with --name",
        )
    if jails.is_running(eng, rec.name):
        return [Action("none", f"jail {rec.name} is up to date and running; nothing to do")]
    spec = jails.spec_for(eng, rec)
    return [Action("files", "write the jail's configuration files", notes=_file_notes(eng),
                   files=jail_writes(eng, spec, rec)),
            _start(eng, spec, f"start jail {rec.name}")]  # fmt: skip


def _address(eng: Engine, rexfile: Rexfile, name: str, actions: list[Action]) -> IPInterface:
    host = eng.host
    if rexfile.ip is not None:
        holder = ipam.owner(host.store, rexfile.ip.ip)
        if holder not in (None, name):
            raise Conflict(f"address {rexfile.ip.ip} is already used by jail {holder!r}")
        actions.append(Action("address", f"claim the fixed address {rexfile.ip}"))
        return rexfile.ip
    subnet = host.config.subnet
    free = ipam.next_free(host.store, subnet)
    now = f"{free} is free now" if free else "none is free now"
    actions.append(Action("address", f"allocate an address from {subnet} ({now})"))
    return free or ipaddress.ip_interface(f"{host.config.host_address}/{subnet.prefixlen}")


def _spec(eng: Engine, rec: JailRecord, root: Path, base: BaseInfo) -> JailSpec:
    host = eng.host
    return JailSpec(
        name=rec.name, root=root, hostname=rec.hostname, address=rec.address,
        interface=jails.interface_for(eng, rec), gateway=host.config.host_address, env=rec.env,
        osrelease=base.props.get("osrelease") or None,
    )  # fmt: skip


def _step_action(eng: Engine, rexfile: Rexfile, base: BaseInfo, plan: builder.StepPlan) -> Action:
    host = eng.host
    full = host.config.dataset
    what = f"step {plan.index}: {plan.step.describe()}"
    if plan.cached:
        return Action("cached", f"{what} (cached as {full}/{plan.snapshot})")
    if isinstance(plan.step, Run):
        root = host.storage.mountpoint("images") / plan.key
        files = host_writes(host.runtime.build_files(root, builder.planned_net(host, plan.key)))
        return Action("build", what, argvs(builder.step_commands(host, rexfile, base, plan)),
                      files=files)  # fmt: skip
    notes = (f"copy {plan.step.src} to {plan.step.dst} inside the image",)
    return Action("build", what, argvs(builder.step_commands(host, rexfile, base, plan)), notes)
