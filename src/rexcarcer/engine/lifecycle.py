"""The jail lifecycle's parts: the record, the files rex writes into a jail,
start, stop, restart, exec, listing, and removing everything of a jail. ``rex
up`` (jails.py) and an update in place (update.py) are built from these.

In a cluster, jail names are cluster-wide: nothing here touches a jail whose
record names another host (the jail service routes such requests to that
host's agent; service/routed.py).
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import time
from collections.abc import Sequence
from pathlib import Path

from rexcarcer import ipam, jailfs
from rexcarcer.engine import build as builder
from rexcarcer.engine import persist, volumes
from rexcarcer.engine.base import Engine
from rexcarcer.errors import (
    Conflict,
    NotFound,
    NotSupported,
    OutOfSpace,
    StorageError,
    UnsafePath,
    ZfsUnresponsive,
)
from rexcarcer.model.health import Health
from rexcarcer.model.jail import (
    Desired,
    JailInfo,
    JailRecord,
    PublishEntry,
    ServiceEntry,
    Status,
)
from rexcarcer.rexfile.ast import RestartPolicy, Rexfile
from rexcarcer.run import Completed, OutputSink
from rexcarcer.runtime.base import JailSpec, JailState, Secret, jail_env
from rexcarcer.state import records
from rexcarcer.state.health import all_health
from rexcarcer.storage.base import space_hint

ENV_FILE = "/etc/rexcarcer/env"
RC_CONF_D = "/etc/rc.conf.d"


def record(eng: Engine, name: str) -> JailRecord | None:
    return records.get_jail(eng.host.store, name)


def hostname_for(eng: Engine, rexfile: Rexfile, name: str) -> str:
    return rexfile.hostname or f"{name}.jail.{eng.host.config.zone}"


def new_record(eng: Engine, rexfile: Rexfile, name: str) -> JailRecord:
    """The record ``rex up`` claims for a new jail (status creating, owned by this run)."""
    host = eng.host
    return JailRecord(
        name=name, host=host.config.host, status=Status.CREATING, desired=Desired.RUNNING,
        definition=rexfile.digest(), rexfile=rexfile.display if rexfile.path else "",
        base=rexfile.base.ref,
        hostname=hostname_for(eng, rexfile, name),
        services=tuple(ServiceEntry(s.name, s.port, str(s.proto)) for s in rexfile.services),
        env=rexfile.env, enable=tuple((e.service, e.flags) for e in rexfile.enable),
        created=int(time.time()), pid=os.getpid(),
        pid_start=host.platform.process_start(os.getpid()),
        volumes=volumes.entries(rexfile), limits=rexfile.limits, secrets=rexfile.secrets,
        canonical=rexfile.canonical(),
        healthcheck=rexfile.healthcheck, restart=rexfile.restart or RestartPolicy.ON_FAILURE,
        depends=tuple(d.name for d in rexfile.depends),
        publish=tuple(PublishEntry(p.host_port, p.port, str(p.proto),
                                   str(p.on) if p.on is not None else None)
                      for p in rexfile.publish),  # netpolicy/publish.py checked them
    )  # fmt: skip


def same_definition(eng: Engine, rexfile: Rexfile, existing: JailRecord) -> bool:
    return _same_definition(eng, rexfile, existing)


def _same_definition(eng: Engine, rexfile: Rexfile, existing: JailRecord) -> bool:
    if existing.definition != rexfile.digest():
        return False
    # COPY contents are not in the digest: compare the image too
    base = eng.bases.ensure(eng.host, rexfile.base)
    return builder.image_of(builder.plan_build(eng.host, rexfile, base), base) == existing.image


def clone_props(rec: JailRecord) -> dict[str, str]:
    return {"jail": rec.name, "generation": str(rec.generation)}


def _cleanup(eng: Engine, name: str, *, with_volumes: bool = False) -> None:
    """Remove everything of jail ``name`` (its volumes only when asked); each
    part may already be gone."""
    host = eng.host
    rec = record(eng, name) or JailRecord(name=name, host=host.config.host)
    for hook in reversed(eng.hooks):
        hook.stopped(host, rec)
        hook.destroyed(host, rec)
    host.runtime.remove(name)
    host.storage.destroy(f"jails/{name}", recursive=True)
    for ds in host.storage.datasets("generations"):  # kept earlier generations
        if ds.props.get("jail") == name:
            host.storage.destroy(ds.name, recursive=True)
    for old in records.generations(host.store, name):
        records.delete_generation(host.store, name, old.generation)
    if with_volumes:
        for volume in volumes.of_jail(host, name):
            volumes.destroy(host, name, volume)
    ipam.release_all(host.store, name)
    records.delete_jail(host.store, name)


def require(eng: Engine, name: str) -> JailRecord:
    rec = record(eng, name)
    if rec is None:
        raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
    ensure_local(eng, rec)
    return rec


def foreign_host(eng: Engine, rec: JailRecord | None) -> str | None:
    """The other host a jail record belongs to in a cluster (None: ours, or none)."""
    config = eng.host.config
    if rec is not None and config.etcd and rec.host and rec.host != config.host:
        return rec.host
    return None


def ensure_local(eng: Engine, rec: JailRecord) -> None:
    """Jail names are cluster-wide: never touch another host's jail from here."""
    owner = foreign_host(eng, rec)
    if owner is not None:
        raise Conflict(
            f"jail {rec.name!r} already exists on host {owner!r}",
            hint=f"run the command on {owner}, or pick another name with --name",
        )


def is_running(eng: Engine, name: str) -> bool:
    return eng.host.runtime.status([name])[name].state is JailState.RUNNING


def _osrelease(eng: Engine, image: str) -> str | None:
    """The image's osrelease (a build step carries its base version's along). A jail
    cloned from a base itself reads its version's snapshot first: the dataset's
    names the base's current version, which may be a newer one (docs/bases.md)."""
    storage = eng.host.storage
    own = storage.get_props(image).get("osrelease") if image.startswith("bases/") else None
    return own or storage.get_props(image.split("@")[0]).get("osrelease") or None


def spec_for(eng: Engine, rec: JailRecord) -> JailSpec:
    host = eng.host
    root, osrelease = _root_and_osrelease(eng, rec)
    return JailSpec(
        name=rec.name,
        root=root,
        hostname=rec.hostname,
        address=rec.address,
        # a public address lives on its range's interface (jail(8) ip4.addr)
        interface=host.config.interface_for(rec.address.ip if rec.address else None),
        gateway=host.config.host_address,
        env=rec.env,
        osrelease=osrelease,
        limits=rec.limits,
        routes=published_routes(rec),
    )


def published_routes(rec: JailRecord) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A jail that publishes a port answers clients from anywhere: its replies
    go through the host (a default route). Without NAT, connections it opens
    itself leave with its own address, which nothing routes back."""
    if not rec.publish or rec.address is None:
        return ()
    return (ipaddress.ip_network("0.0.0.0/0" if rec.address.version == 4 else "::/0"),)


def open_secrets(eng: Engine, names: Sequence[str]) -> tuple[Secret, ...]:
    """The values of the jail's secrets, read at every start (so a `rex secret
    set` takes effect at the next start or update); also the check `rex up`
    makes before anything changes."""
    if not names:
        return ()
    if eng.secrets is None:
        raise NotSupported("this rex has no secret store: SECRET cannot be used here")
    return eng.secrets.open(eng.host, names)


def _root_and_osrelease(eng: Engine, rec: JailRecord) -> tuple[Path, str | None]:
    """The jail's mountpoint and ``osrelease_of``, read with one zfs command (every
    start asks both): the same answers as ``Storage.mountpoint`` and ``osrelease_of``."""
    storage = eng.host.storage
    jail, image_ds = f"jails/{rec.name}", rec.image.split("@")[0]
    own_snapshot = rec.image.startswith("bases/")
    names = [jail, *([rec.image] if own_snapshot else []), image_ds]
    try:
        found = storage.props_of(list(dict.fromkeys(names)), ["osrelease"])
    except ZfsUnresponsive:
        raise  # asking again would wait as long again
    except StorageError:  # a name rex refuses (a record without an image): one by one
        return storage.mountpoint(jail), osrelease_of(eng, rec)
    mine = found.get(jail)
    if mine is None:
        raise StorageError(f"cannot open '{storage.parent}/{jail}': dataset does not exist")
    if mine.mountpoint is None:
        raise StorageError(f"dataset {storage.parent}/{jail} has no mountpoint")
    # as _osrelease: the image's snapshot (a base's), then its dataset; a jail
    # whose image is not here (rex import, rex move) carries it on its dataset
    image = found.get(rec.image) if own_snapshot else found.get(image_ds)
    if image is None or image_ds not in found:
        return mine.mountpoint, mine.props.get("osrelease") or None
    own = image.props.get("osrelease") if own_snapshot else None
    return mine.mountpoint, own or found[image_ds].props.get("osrelease") or None


def osrelease_of(eng: Engine, rec: JailRecord) -> str | None:
    """The jail's osrelease (jail(8)): its image's; a jail received from another
    host (rex import, rex move) has no image here and carries it on its dataset."""
    storage = eng.host.storage
    try:
        return _osrelease(eng, rec.image)
    except (StorageError, NotFound):
        return storage.get_props(f"jails/{rec.name}").get("osrelease") or None


def jail_files(
    eng: Engine, spec: JailSpec, enable: Sequence[tuple[str, str | None]] = ()
) -> list[tuple[str, bytes, int]]:
    """(path inside the jail, content, mode) of the files rex renders at every start."""
    resolv = builder.resolv_conf(eng.host.config)
    env = "".join(f"{k}={_sh_quote(v)}\n" for k, v in spec.env)
    out = [(builder.RESOLV_CONF, resolv, 0o644)]
    hostname_file = eng.host.platform.hostname_file
    if hostname_file is not None:  # FreeBSD has none: the name is host.hostname
        out.append((hostname_file, f"{spec.hostname}\n".encode(), 0o644))
    out.append((ENV_FILE, env.encode(), 0o644))
    out += [(f"{RC_CONF_D}/{service}", rc_conf_d(service, flags).encode(), 0o644)
            for service, flags in enable]  # fmt: skip
    return out


def rc_conf_d(service: str, flags: str | None) -> str:
    """``/etc/rc.conf.d/<service>`` for ``ENABLE <service> [FLAGS <text>]``.

    rc.subr(8) load_rc_config reads /etc/rc.conf, then ``/etc/rc.conf.d/NAME``
    (libexec/rc/rc.subr l.1978-1993), so this file wins over rc.conf. rex
    writes it from the host through jailfs, never with ``sysrc -R ROOT``, which
    runs the jail root's own /bin/sh chrooted as host root (usr.sbin/sysrc/sysrc,
    the ROOTDIR branch: ``chroot "$ROOTDIR" /bin/sh``)."""
    lines = [f"# generated by rex from ENABLE {service}; rewritten at every start",
             f'{service}_enable="YES"']  # fmt: skip
    if flags is not None:
        lines.append(f"{service}_flags={_sh_quote(flags)}")
    return "\n".join(lines) + "\n"


def write_jail_files(eng: Engine, spec: JailSpec, rec: JailRecord) -> None:
    try:
        for inside, data, mode in jail_files(eng, spec, rec.enable):
            jailfs.write_file(spec.root, inside, data, mode=mode)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            parent = eng.host.storage.parent
            raise OutOfSpace(
                f"out of space for dataset {parent}/jails/{spec.name}: cannot write its "
                f"configuration: {exc}", hint=space_hint(parent),
            ) from exc  # fmt: skip
        raise UnsafePath(f"cannot write configuration into jail {spec.name}: {exc}") from exc


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def lock_name(name: str) -> str:
    """The host-local lock a lifecycle change of jail ``name`` holds; the agent
    takes it too before it starts or stops a jail."""
    return f"jail-{name}"


def start(eng: Engine, name: str, *, guarded: bool = False) -> None:
    """``guarded``: the caller made the firewall guard hold since it claimed
    the jail's address (``NetPolicy.guard``), so the start does not again."""
    with eng.host.lock(lock_name(name)):
        start_locked(eng, name, guarded=guarded)


def start_locked(eng: Engine, name: str, *, guarded: bool = False) -> None:
    rec = require(eng, name)
    start_record(eng, rec, guarded=guarded)
    if not rec.wants_running:
        persist.put(eng.host, rec.replace(desired=Desired.RUNNING))


def start_record(eng: Engine, rec: JailRecord, *, guarded: bool = False) -> None:
    """Start the jail ``rec`` describes, whatever the store says (``rex move``
    starts a jail on its new host before that host's record is its record)."""
    host, name = eng.host, rec.name
    spec = dataclasses.replace(spec_for(eng, rec), secrets=open_secrets(eng, rec.secrets))
    if rec.volumes:
        spec = dataclasses.replace(spec, mounts=volumes.attach(host, rec, spec.root))
    host.progress.step(f"Starting {name}")
    if not guarded:  # before anything of the jail runs: its /etc/rc may connect at once
        eng.policy.guard(host)
    with jailfs.kept_open(spec.root):  # rex's writes before the start: a walk per directory
        write_jail_files(eng, spec, rec)
        for hook in eng.hooks:
            hook.prepare(host, rec, spec)
    host.runtime.start(spec)
    try:
        for hook in eng.hooks:
            hook.started(host, rec, spec)
    except BaseException:
        stop_runtime(eng, rec)
        raise


def stop(eng: Engine, name: str) -> None:
    with eng.host.lock(lock_name(name)):
        stop_locked(eng, name)


def stop_locked(eng: Engine, name: str) -> None:
    rec = require(eng, name)
    eng.host.progress.step(f"Stopping {name}")
    stop_runtime(eng, rec)
    persist.put(eng.host, rec.replace(desired=Desired.STOPPED))


def stop_runtime(eng: Engine, rec: JailRecord) -> None:
    for hook in reversed(eng.hooks):
        hook.stopped(eng.host, rec)
    eng.host.runtime.stop(rec.name)


def restart(eng: Engine, name: str) -> None:
    with eng.host.lock(lock_name(name)):
        stop_locked(eng, name)
        start_locked(eng, name)


def exec_in(
    eng: Engine,
    name: str,
    argv: Sequence[str],
    *,
    interactive: bool,
    on_output: OutputSink | None = None,
    tty: int | None = None,
) -> Completed:
    rec = require(eng, name)
    env = jail_env(rec.env)
    return eng.host.runtime.exec(name, argv, env=env, interactive=interactive,
                                 on_output=on_output, tty=tty)  # fmt: skip


def info(eng: Engine, name: str) -> JailInfo:
    found = list_jails(eng, [name])
    if not found:
        raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
    return found[0]


def list_jails(eng: Engine, names: Sequence[str] | None = None) -> list[JailInfo]:
    recs = records.list_jails(eng.host.store)
    if names is not None:
        recs = [r for r in recs if r.name in names]
    # one store read per prefix, one runtime pass (state and usage together)
    local = [r.name for r in recs if foreign_host(eng, r) is None]
    status = eng.host.runtime.status(local, usage=True)
    health = all_health(eng.host.store)
    out = []
    for r in recs:
        st = status.get(r.name)
        state = str(st.state) if st is not None else str(r.desired)
        h = health.get(r.name)
        # a verdict is about a run: none while the jail is down, except why it stays down
        shown = h.shown if h is not None and (state != "stopped" or h.state is Health.EXITED) \
            else None  # fmt: skip
        running = st is not None and st.state is JailState.RUNNING
        out.append(JailInfo.of(r, state, shown, st.usage if running and st else None))
    return out
