"""The jail service in a cluster: here, or on the host that owns the jail.

This is the one place that decides where a request runs. ``rex up`` is placed
(cluster/placement.py: the host that has the jail, ``--host``, the host whose
subnet holds a fixed IP, else the live host with the fewest jails); every verb
about an existing jail goes to the host its record names. Work for this host
runs in process (``LocalService``); work for another goes to its agent over
mutual TLS (``RemoteService``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from rexcarcer.cluster import membership
from rexcarcer.cluster.placement import Placement, place
from rexcarcer.model.jail import GenerationInfo, JailInfo, VolumeInfo
from rexcarcer.model.plan import Action
from rexcarcer.progress import Progress
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink
from rexcarcer.service.api import JailService
from rexcarcer.service.local import LocalService
from rexcarcer.state import records
from rexcarcer.state.base import Store


def decide(store: Store, rexfile: Rexfile, name: str, wanted: str | None, me: str) -> Placement:
    owner = records.get_jail(store, name)
    # the host running this command is up even when its agent is not
    hosts = [replace(h, alive=True) if h.name == me else h for h in membership.list_hosts(store)]
    return place(
        hosts,
        wanted=wanted,
        pinned=rexfile.ip.ip if rexfile.ip is not None else None,
        owner=owner.host if owner is not None else None,
    )


class RoutedService:
    def __init__(
        self,
        local: LocalService,
        remote: Callable[[Store, str], JailService],
        progress: Progress,
    ) -> None:
        self.local = local
        self.remote = remote  # (store, host) -> that host's door
        self.progress = progress

    def _owner(self, name: str) -> tuple[str, JailService]:
        """Where jail ``name`` lives and the door to it (this host for an unknown
        jail, whose own code then says it does not exist)."""
        with self.local.engine() as eng:
            me = eng.host.config.host
            rec = records.get_jail(eng.host.store, name)
            if rec is None or not rec.host or rec.host == me:
                return me, self.local
            return rec.host, self.remote(eng.host.store, rec.host)

    def _place(self, rexfile: Rexfile, name: str, on_host: str | None) -> Placement:
        with self.local.engine() as eng:
            return decide(eng.host.store, rexfile, name, on_host, eng.host.config.host)

    def up(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> JailInfo:
        where = self._place(rexfile, name, on_host)
        self.progress.step(f"Placing {name} on {where.host}: {where.why}")
        with self.local.engine() as eng:
            if where.host == eng.host.config.host:
                door: JailService = self.local
            else:
                door = self.remote(eng.host.store, where.host)
        return door.up(rexfile, name)

    def plan(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> list[Action]:
        where = self._place(rexfile, name, on_host)
        actions = [Action("place", f"on host {where.host}: {where.why}")]
        with self.local.engine() as eng:
            here = where.host == eng.host.config.host
        if here:
            return actions + self.local.plan(rexfile, name)
        file = rexfile.path.name if rexfile.path else "the .rex file"
        return [*actions, Action("remote", f"send {file} and its COPY sources to {where.host}'s "
                                 f"agent, which builds and starts {name}; `rex plan` on "
                                 f"{where.host} shows its steps")]  # fmt: skip

    def build(self, rexfile: Rexfile) -> str:
        return self.local.build(rexfile)

    def _lifecycle(self, verb: str, name: str, run: Callable[[JailService], JailInfo]) -> JailInfo:
        owner, door = self._owner(name)
        if door is not self.local:
            self.progress.step(f"{verb} {name} on {owner}")
        return run(door)

    def start(self, name: str) -> JailInfo:
        return self._lifecycle("Start", name, lambda d: d.start(name))

    def stop(self, name: str) -> JailInfo:
        return self._lifecycle("Stop", name, lambda d: d.stop(name))

    def restart(self, name: str) -> JailInfo:
        return self._lifecycle("Restart", name, lambda d: d.restart(name))

    def destroy(self, name: str, *, volumes: bool = False) -> list[str]:
        owner, door = self._owner(name)
        if door is not self.local:
            self.progress.step(f"Destroy {name} on {owner}")
        return door.destroy(name, volumes=volumes)

    def rollback(self, name: str, *, to: int | None = None) -> JailInfo:
        return self._lifecycle("Roll back", name, lambda d: d.rollback(name, to=to))

    def history(self, name: str) -> list[GenerationInfo]:
        return self._owner(name)[1].history(name)

    def volumes(self) -> list[VolumeInfo]:
        return self.local.volumes()

    def volume_rm(self, jail: str, volume: str) -> None:
        self._owner(jail)[1].volume_rm(jail, volume)

    def volume_snapshot(self, jail: str, volume: str, label: str | None) -> str:
        return self._owner(jail)[1].volume_snapshot(jail, volume, label)

    def exec(
        self, name: str, argv: Sequence[str], *, interactive: bool, sink: OutputSink | None
    ) -> int:
        _, door = self._owner(name)
        return door.exec(name, argv, interactive=interactive and door is self.local, sink=sink)

    def cp_in(self, name: str, dst: str, tar: bytes) -> None:
        self._owner(name)[1].cp_in(name, dst, tar)

    def cp_out(self, name: str, src: str) -> bytes:
        return self._owner(name)[1].cp_out(name, src)

    def console(self, name: str) -> int:
        return self._owner(name)[1].console(name)

    def ls(self) -> list[JailInfo]:
        return self.local.ls()

    def logs(self, name: str, *, lines: int | None, follow: bool, sink: OutputSink) -> None:
        _, door = self._owner(name)
        door.logs(name, lines=lines, follow=follow, sink=sink)

    def close(self) -> None:
        self.local.close()
