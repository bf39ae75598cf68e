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
from rexcarcer.engine import jails, update
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict
from rexcarcer.model.base import BaseInfo
from rexcarcer.model.jail import JailRecord
from rexcarcer.model.plan import Action, FileWrite, argvs
from rexcarcer.rexfile.ast import IPInterface, Rexfile, Run
from rexcarcer.runtime.base import HostFile, JailSpec, Secret

# the port the jails' syslog is forwarded to (logs/collector.py LOG_PORT; the
# engine imports no feature)
LOG_PORT = 514


def plan_up(eng: Engine, rexfile: Rexfile, name: str) -> list[Action]:
    host = eng.host
    rec = jails.record(eng, name)
    # what `rex up` refuses, the plan refuses: a secret this host cannot open
    # among them (the values are opened and dropped, never shown)
    jails.admit(eng, rexfile, name)
    base = eng.bases.local(host, rexfile.base)
    if base is None:  # planning never touches the network
        return [
            Action("fetch", f"fetch, verify and receive the base {rexfile.base.ref}"),
            Action("build", f"then build {len(rexfile.steps)} step(s) and start {name}"),
        ]
    plans = builder.plan_build(host, rexfile, base)
    image = builder.image_of(plans, base)
    actions = [_step_action(eng, rexfile, base, p) for p in plans]
    guard = _guard_action(eng)
    first_run = next((i for i, p in enumerate(plans)
                      if isinstance(p.step, Run) and not p.cached), None)  # fmt: skip
    if first_run is not None and guard is not None:
        # loaded before the first step that runs, then already in place
        actions.insert(first_run, guard)
        guard = None
    if rec is not None and rec.ready:
        return _existing(eng, rexfile, rec, image, actions, guard)
    address = _address(eng, rexfile, name, actions)
    new = jails.new_record(eng, rexfile, name).replace(address=address, image=image)
    clone = host.storage.clone_argv(image, f"jails/{name}", jails.clone_props(new))
    # the record's copy on the dataset (engine/persist.py) is bookkeeping, like the
    # store's: named here, its `zfs set` not listed (its created time is the run's)
    actions.append(
        Action(
            "clone",
            f"clone the image to jails/{name} (rex keeps a copy of the "
            "jail's record on it: rexcarcer:record)",
            argvs([clone]),
        )
    )
    root = host.storage.mountpoint("jails") / name
    spec = _spec(eng, new, root, base)
    if guard is not None:
        actions.append(guard)
    actions.append(Action("files", "write the jail's configuration files",
                          notes=_file_notes(eng), files=jail_writes(eng, spec, new)))  # fmt: skip
    actions += _limits_and_secrets(rexfile)
    actions.append(_start(eng, spec, f"start jail {name} ({host.platform.kind} platform)"))
    if rexfile.publish:
        # loaded by the jail's hook once it runs (netpolicy/hook.py), one firewall load
        ports = ", ".join(f"{p.host_port}->{p.port}/{p.proto}" + (f" on {p.on}" if p.on else "")
                          for p in rexfile.publish)  # fmt: skip
        actions.append(Action("publish", f"publish {ports} once {name} runs (firewall)"))
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


def _guard_action(eng: Engine) -> Action | None:
    """Loading the firewall rules that keep jails off the host's control ports,
    when they are not loaded as they should be."""
    commands = eng.policy.guard_commands(eng.host)
    if not commands:
        return None
    what = "load rex's firewall rules (the guard: jails never reach the host's control ports)"
    return Action("firewall", what, argvs(commands))


def _existing(
    eng: Engine,
    rexfile: Rexfile,
    rec: JailRecord,
    image: str,
    steps: list[Action],
    guard: Action | None,
) -> list[Action]:
    """``steps``: the build's actions (with the guard before the first that
    runs); ``guard``: the guard when the start is the first to need it."""
    if rec.definition != rexfile.digest() or rec.image != image:
        return _replace(eng, rexfile, rec, image, [*steps, *([guard] if guard else [])])
    if jails.is_running(eng, rec.name):
        return [Action("none", f"jail {rec.name} is up to date and running; nothing to do")]
    spec = jails.spec_for(eng, rec)
    files = Action("files", "write the jail's configuration files", notes=_file_notes(eng),
                   files=jail_writes(eng, spec, rec))  # fmt: skip
    start = _start(eng, spec, f"start jail {rec.name}")
    return [files, start] if guard is None else [guard, files, start]


def _replace(
    eng: Engine, rexfile: Rexfile, rec: JailRecord, image: str, steps: list[Action]
) -> list[Action]:
    """An update in place (engine/update.py): the new generation's build steps,
    then the switch, with the reason."""
    host, name = eng.host, rec.name
    gen = update.next_generation(host, rec)
    why = ", ".join(update.changes(rec, rexfile.canonical(), rec.image, image))
    new = jails.new_record(eng, rexfile, name).replace(image=image, generation=gen,
                                                       address=rec.address)  # fmt: skip
    clone = host.storage.clone_argv(image, f"jails/{name}", jails.clone_props(new))
    notes = (
        f"snapshot the volumes, stop generation {rec.generation} and keep it as "
        f"generations/{name}.{rec.generation}",
        f"carry {update.IDENTITY_DIR} over; start generation {gen}; if it does not start, "
        f"roll back to generation {rec.generation} on its own",
    )
    return [
        *steps,
        Action("replace", f"replace {name}: generation {rec.generation} -> {gen} ({why})",
               argvs([clone]), notes),
    ]  # fmt: skip


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
        interface=host.config.interface_for(rec.address.ip if rec.address else None),
        gateway=host.config.host_address, env=rec.env,
        osrelease=base.props.get("osrelease") or None, limits=rec.limits,
        # names only: the commands depend on which secrets, never on their values
        secrets=tuple(Secret(n, b"") for n in rec.secrets),
    )  # fmt: skip


def _limits_and_secrets(rexfile: Rexfile) -> list[Action]:
    out = []
    if rexfile.limits:
        notes = tuple(f"LIMIT {r} {v}" for r, v in rexfile.limits.as_json().items())
        out.append(
            Action(
                "limits",
                "limit the jail from its first process on (cgroups and "
                "RLIMIT_NOFILE on Linux, rctl rules on FreeBSD)",
                notes=notes,
            )
        )
    if rexfile.secrets:
        notes = tuple(
            f"/run/secrets/{n} (0400), from `rex secret set {n}`" for n in rexfile.secrets
        )
        out.append(
            Action("secrets", "put the jail's secrets on a tmpfs before /etc/rc runs", notes=notes)
        )
    return out


def _step_action(eng: Engine, rexfile: Rexfile, base: BaseInfo, plan: builder.StepPlan) -> Action:
    host = eng.host
    full = host.config.dataset
    what = f"step {plan.index}: {plan.step.describe()}"
    if plan.cached:
        return Action("cached", f"{what} (cached as {full}/{plan.snapshot})")
    commands = argvs(builder.step_commands(host, rexfile, base, plan))
    if isinstance(plan.step, Run):
        root = host.storage.mountpoint("images") / plan.key
        files = host_writes(host.runtime.build_files(root, builder.planned_net(host, plan.key)))
        notes: tuple[str, ...] = (
            f"write {builder.RESOLV_CONF} into the image, then run the step on a build address "
            f"of {host.config.subnet} held by {builder.build_owner(plan.key)} while it runs",
        )
        return Action("build", what, commands, notes, files)
    notes = (f"copy {plan.step.src} to {plan.step.dst} inside the image",)
    return Action("build", what, commands, notes)
