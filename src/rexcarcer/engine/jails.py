"""Jail lifecycle: up (a transaction), start, stop, destroy, list, exec.

The state record ``jails/<name>`` is claimed first, with status ``creating`` and
the PID of the run. Everything ``rex up`` creates after that is rolled back if a
step fails; if the run is killed, the next ``rex up`` or ``rex destroy`` finds
the record of a dead PID and removes what that run left.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rexcarcer import ipam
from rexcarcer.engine import build as builder
from rexcarcer.engine import files
from rexcarcer.engine.bases import BaseInfo, find_base
from rexcarcer.engine.host import Host
from rexcarcer.errors import Conflict, NotFound, RexError, UnsafePath
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import Completed, OutputSink
from rexcarcer.runtime import procfs
from rexcarcer.runtime.base import JailSpec, JailState, jail_env
from rexcarcer.state.base import Compare, Delete, Put, create_json, dumps

PREFIX = "jails/"


@dataclass(frozen=True, slots=True)
class JailInfo:
    name: str
    state: str  # running, stopped, creating
    address: str | None
    hostname: str
    services: list[dict[str, Any]]
    base: str
    image: str
    host: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state, "ips": [self.address] if self.address else [],
            "hostname": self.hostname, "services": self.services, "base": self.base,
            "image": self.image, "host": self.host,
        }  # fmt: skip


def record(host: Host, name: str) -> dict[str, Any] | None:
    entry = host.store.get(PREFIX + name)
    return entry.json() if entry else None


def _services(rexfile: Rexfile) -> list[dict[str, Any]]:
    return [{"name": s.name, "port": s.port, "proto": str(s.proto)} for s in rexfile.services]


def hostname_for(host: Host, rexfile: Rexfile, name: str) -> str:
    return rexfile.hostname or f"{name}.jail.{host.config.zone}"


def resolve_base(host: Host, rexfile: Rexfile) -> BaseInfo:
    if rexfile.base.is_url:  # fetched, verified and received once; then local
        from rexcarcer.base.receive import ensure_base

        return ensure_base(host, rexfile.base.ref, rexfile.base.pin)
    info = find_base(host, rexfile.base.ref)
    if rexfile.base.pin and info.props.get("digest") != rexfile.base.pin.lower():
        raise Conflict(
            f"base {info.name!r} does not match the pin sha256:{rexfile.base.pin} "
            f"(its digest: {info.props.get('digest') or 'none, it was not fetched'})",
            hint="pin a fetched base's digest (`rex base ls -o json`), or remove the pin",
        )
    return info


# -- rex up ---------------------------------------------------------------------


def up(host: Host, rexfile: Rexfile, name: str) -> JailInfo:
    """Build (cached), create, start; idempotent for an unchanged definition."""
    builder.copy_sources(rexfile)  # bad COPY sources fail before anything changes
    digest = rexfile.digest()
    existing = _reclaim(host, name)
    if existing is not None:
        same = existing.get("definition") == digest
        if same:  # COPY contents are not in the digest: compare the image too
            base = resolve_base(host, rexfile)
            image = builder.image_of(builder.plan_build(host, rexfile, base), base)
            same = image == existing.get("image")
        if not same:
            raise Conflict(
                f"jail {name!r} already exists with a different definition",
                hint=f"run `rex destroy {name}` first, or pick another name with --name",
            )
        if existing.get("desired") != "running" or not _is_running(host, name):
            start(host, name)
        return info(host, name)
    base = resolve_base(host, rexfile)
    host.storage.ensure_layout()
    if rexfile.ip is not None:
        _precheck_fixed_ip(host, rexfile, name)
    rec: dict[str, Any] = {
        "name": name, "status": "creating", "pid": os.getpid(), "pid_start": _my_start(),
        "definition": digest, "rexfile": str(rexfile.path or ""), "base": rexfile.base.ref,
        "hostname": hostname_for(host, rexfile, name), "services": _services(rexfile),
        "env": [list(kv) for kv in rexfile.env], "host": host.config.host,
        "desired": "running", "created": int(time.time()), "address": None, "image": "",
    }  # fmt: skip
    if not create_json(host.store, PREFIX + name, rec):
        other = record(host, name)
        if other is not None:  # in a cluster: claimed on another host just now
            ensure_local(host, name, other)
        raise Conflict(f"jail {name!r} is being created by another rex run", hint="try again")
    try:
        _create(host, rexfile, name, base, rec)
    except BaseException as exc:
        host.progress.step(f"Rolling back {name}")
        _cleanup(host, name)
        if isinstance(exc, RexError) and not exc.message.startswith("rex up"):
            raise type(exc)(f"rex up {name} failed: {exc.message}", hint=exc.hint) from exc
        raise
    return info(host, name)


def _precheck_fixed_ip(host: Host, rexfile: Rexfile, name: str) -> None:
    assert rexfile.ip is not None
    holder = ipam.owner(host.store, rexfile.ip.ip)
    if holder is not None and holder != name:
        raise Conflict(
            f"address {rexfile.ip.ip} is already used by jail {holder!r}",
            hint="pick another IP, or leave IP out so that rex assigns one",
        )


def _create(host: Host, rexfile: Rexfile, name: str, base: BaseInfo, rec: dict[str, Any]) -> None:
    image = builder.build(host, rexfile, base)
    host.progress.step(f"Assigning an address to {name}")
    if rexfile.ip is not None:
        ipam.claim(host.store, rexfile.ip, name, host=host.config.host)
        address = rexfile.ip
    else:
        address = ipam.allocate(host.store, host.config.subnet, name, host=host.config.host)
    rec.update(address=str(address), image=image)
    _save(host, name, rec)
    host.progress.step(f"Cloning {image} to jails/{name}")
    host.storage.clone(image, f"jails/{name}", props={"jail": name})
    start(host, name)
    rec = record(host, name) or rec
    rec.update(status="ready")
    rec.pop("pid", None)
    rec.pop("pid_start", None)
    _save(host, name, rec)


def _save(host: Host, name: str, rec: dict[str, Any]) -> None:
    host.store.commit([], [Put(PREFIX + name, dumps(rec))])


def _my_start() -> int:
    st = procfs.stat(os.getpid())
    return st.starttime if st else 0


def _reclaim(host: Host, name: str) -> dict[str, Any] | None:
    """The existing record, after removing the leftovers of a killed run."""
    rec = record(host, name)
    if rec is not None:
        ensure_local(host, name, rec)
    if rec is None or rec.get("status") != "creating":
        return rec
    pid, start_time = rec.get("pid"), rec.get("pid_start")
    if isinstance(pid, int) and procfs.alive(
        pid, start_time if isinstance(start_time, int) else None
    ):
        raise Conflict(
            f"jail {name!r} is being created by another rex run (pid {pid})",
            hint="wait for it to finish",
        )
    host.progress.step(f"Cleaning up what an interrupted `rex up {name}` left")
    _cleanup(host, name)
    return None


def _cleanup(host: Host, name: str) -> None:
    """Remove everything of jail ``name``; each part may already be gone."""
    rec = record(host, name) or {"name": name}
    for hook in reversed(host.hooks):
        hook.stopped(host, rec)
        hook.destroyed(host, rec)
    host.runtime.remove(name)
    host.storage.destroy(f"jails/{name}", recursive=True)
    ipam.release_all(host.store, name)
    entry = host.store.get(PREFIX + name)
    if entry is not None:
        host.store.commit([Compare(entry.key, entry.revision)], [Delete(entry.key)])


# -- lifecycle --------------------------------------------------------------------


def _require(host: Host, name: str) -> dict[str, Any]:
    rec = record(host, name)
    if rec is None:
        raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
    ensure_local(host, name, rec)
    return rec


def remote_owner(host: Host, rec: dict[str, Any] | None) -> str | None:
    """In a cluster, the other host a jail record belongs to (None: ours, or no record)."""
    if rec is None:
        return None
    owner = rec.get("host")
    if host.config.etcd and owner and owner != host.config.host:
        return str(owner)
    return None


def ensure_local(host: Host, name: str, rec: dict[str, Any]) -> None:
    """Jail names are cluster-wide: never touch another host's jail from here."""
    owner = remote_owner(host, rec)
    if owner is not None:
        raise Conflict(
            f"jail {name!r} already exists on host {owner!r}",
            hint=f"run the command on {owner}, or pick another name with --name",
        )


def _is_running(host: Host, name: str) -> bool:
    return host.runtime.status([name])[name].state is JailState.RUNNING


def spec_for(host: Host, rec: dict[str, Any]) -> JailSpec:
    name = rec["name"]
    address = ipaddress.ip_interface(rec["address"]) if rec.get("address") else None
    osrelease = host.storage.get_props(rec["image"].split("@")[0]).get("osrelease") or None
    return JailSpec(
        name=name,
        root=host.storage.mountpoint(f"jails/{name}"),
        hostname=rec["hostname"],
        address=address,
        interface=host.config.interface,
        gateway=host.config.host_address,
        env=tuple((k, v) for k, v in rec.get("env", [])),
        osrelease=osrelease,
    )


def write_jail_files(host: Host, spec: JailSpec) -> None:
    """The files rex renders into the jail at every start."""
    zone = host.config.zone
    resolv = (
        f"# generated by rex\nnameserver {host.config.host_address}\n"
        f"search svc.{zone} jail.{zone}\n"
    )
    env = "".join(f"{k}={_sh_quote(v)}\n" for k, v in spec.env)
    try:
        files.write_file(spec.root, "/etc/resolv.conf", resolv.encode())
        files.write_file(spec.root, "/etc/hostname", f"{spec.hostname}\n".encode())
        files.write_file(spec.root, "/etc/rexcarcer/env", env.encode(), mode=0o644)
    except OSError as exc:
        raise UnsafePath(f"cannot write configuration into jail {spec.name}: {exc}") from exc


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def lock_name(name: str) -> str:
    """The host-local lock a lifecycle change of jail ``name`` holds; the
    cluster agent takes it too before it starts or stops a jail."""
    return f"jail-{name}"


def start(host: Host, name: str) -> None:
    with host.lock(lock_name(name)):
        start_locked(host, name)


def start_locked(host: Host, name: str) -> None:
    rec = _require(host, name)
    spec = spec_for(host, rec)
    host.progress.step(f"Starting {name}")
    write_jail_files(host, spec)
    for hook in host.hooks:
        hook.prepare(host, rec, spec)
    host.runtime.start(spec)
    try:
        for hook in host.hooks:
            hook.started(host, rec, spec)
    except BaseException:
        _stop_runtime(host, rec)
        raise
    if rec.get("desired") != "running":
        rec["desired"] = "running"
        _save(host, name, rec)


def stop(host: Host, name: str) -> None:
    with host.lock(lock_name(name)):
        stop_locked(host, name)


def stop_locked(host: Host, name: str) -> None:
    rec = _require(host, name)
    host.progress.step(f"Stopping {name}")
    _stop_runtime(host, rec)
    rec["desired"] = "stopped"
    _save(host, name, rec)


def _stop_runtime(host: Host, rec: dict[str, Any]) -> None:
    for hook in reversed(host.hooks):
        hook.stopped(host, rec)
    host.runtime.stop(rec["name"])


def restart(host: Host, name: str) -> None:
    with host.lock(lock_name(name)):
        stop_locked(host, name)
        start_locked(host, name)


def destroy(host: Host, name: str) -> None:
    rec = record(host, name)
    if rec is None and not host.storage.exists(f"jails/{name}"):
        raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
    if rec is not None:
        ensure_local(host, name, rec)
    if rec is not None and rec.get("status") == "creating":
        _reclaim(host, name)  # refuses while a live run owns it
    host.progress.step(f"Destroying {name}")
    with host.lock(lock_name(name)):
        _cleanup(host, name)


def exec_in(
    host: Host,
    name: str,
    argv: Sequence[str],
    *,
    interactive: bool,
    on_output: OutputSink | None = None,
) -> Completed:
    rec = _require(host, name)
    env = jail_env([(k, v) for k, v in rec.get("env", [])])
    return host.runtime.exec(name, argv, env=env, interactive=interactive, on_output=on_output)


# -- listing ------------------------------------------------------------------------


def info(host: Host, name: str) -> JailInfo:
    return list_jails(host, [name])[0]


def list_jails(host: Host, names: Sequence[str] | None = None) -> list[JailInfo]:
    recs = [e.json() for e in host.store.list(PREFIX)]
    if names is not None:
        recs = [r for r in recs if r["name"] in names]
    status = host.runtime.status([r["name"] for r in recs if remote_owner(host, r) is None])
    out = []
    for r in recs:
        state = str(status[r["name"]].state) if r["name"] in status else r.get("desired", "?")
        state = state if r.get("status") == "ready" else "creating"
        out.append(JailInfo(
            name=r["name"], state=state, address=r.get("address"), hostname=r.get("hostname", ""),
            services=r.get("services", []), base=r.get("base", ""), image=r.get("image", ""),
            host=r.get("host", ""),
        ))  # fmt: skip
    return out


def base_users(host: Host, base_name: str) -> list[str]:
    return [e.json()["name"] for e in host.store.list(PREFIX) if e.json().get("base") == base_name]
