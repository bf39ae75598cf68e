"""The jail service in this process, on this host's engine (the first door).

Each call opens the engine (store connection, drivers) and closes it when done,
so one ``LocalService`` serves a CLI command or, in an agent, one request per
thread.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from rexcarcer.engine import build as builder
from rexcarcer.engine import jails, update
from rexcarcer.engine import volumes as vol
from rexcarcer.engine.base import Engine
from rexcarcer.engine.moving import Target
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import AgentRequired, Conflict, NotFound, UnsafePath, UsageError
from rexcarcer.model.jail import ExportInfo, GenerationInfo, JailInfo, VolumeInfo
from rexcarcer.model.plan import Action
from rexcarcer.names import check_jail_name
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink, exit_status
from rexcarcer.state import records

CONSOLE = ["/bin/sh", "-l"]


def _require_agent(eng: Engine, rexfile: Rexfile) -> None:
    """HEALTHCHECK, RESTART and DEPENDS are the host agent's work: without one
    they would be silently ignored, so such a file is refused (docs/agent.md)."""
    from rexcarcer.service.socket import agent_answers

    if not rexfile.supervised:
        return
    path = eng.host.config.agent_socket
    if agent_answers(path):
        return
    used = [kw for kw, on in (("HEALTHCHECK", rexfile.healthcheck is not None),
                              ("RESTART", rexfile.restart is not None),
                              ("DEPENDS", bool(rexfile.depends))) if on]  # fmt: skip
    raise AgentRequired(
        f"{rexfile.display} uses {', '.join(used)}, which the host agent carries out, and no "
        f"agent runs on this host (nothing answers on {path})",
        hint="start it: `rex host setup` installs and enables it (or run `rex agent`); "
        "then run `rex up` again",
    )


class LocalService:
    def __init__(
        self,
        open_engine: Callable[[], Engine],
        targets: Callable[[Engine, str], Target] | None = None,
    ) -> None:
        self.open_engine = open_engine
        self.targets = targets  # where `rex move` sends jails (None: the hosts' agents)

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        eng = self.open_engine()
        try:
            yield eng
        finally:
            eng.close()

    @staticmethod
    def _here(eng: Engine, on_host: str | None) -> None:
        if on_host not in (None, eng.host.config.host):
            raise UsageError(
                "--host places jails in a cluster; this host is not in one",
                hint="join a cluster (`rex cluster join`), or leave out --host",
            )

    def up(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> JailInfo:
        check_jail_name(name)
        with self.engine() as eng:
            self._here(eng, on_host)
            _require_agent(eng, rexfile)
            return jails.up(eng, rexfile, name)

    def plan(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> list[Action]:
        check_jail_name(name)
        with self.engine() as eng:
            self._here(eng, on_host)
            return plan_up(eng, rexfile, name)

    def build(self, rexfile: Rexfile) -> str:
        with self.engine() as eng:
            eng.host.storage.ensure_layout()
            image = builder.build(eng, rexfile, eng.bases.ensure(eng.host, rexfile.base))
            return f"{eng.host.config.dataset}/{image}"

    def start(self, name: str) -> JailInfo:
        with self.engine() as eng:
            jails.start(eng, check_jail_name(name))
            return jails.info(eng, name)

    def stop(self, name: str) -> JailInfo:
        with self.engine() as eng:
            jails.stop(eng, check_jail_name(name))
            return jails.info(eng, name)

    def restart(self, name: str) -> JailInfo:
        with self.engine() as eng:
            jails.restart(eng, check_jail_name(name))
            return jails.info(eng, name)

    def destroy(self, name: str, *, volumes: bool = False) -> list[str]:
        with self.engine() as eng:
            return jails.destroy(eng, check_jail_name(name), with_volumes=volumes)

    def rollback(self, name: str, *, to: int | None = None) -> JailInfo:
        with self.engine() as eng:
            return update.rollback(eng, check_jail_name(name), to)

    def history(self, name: str) -> list[GenerationInfo]:
        with self.engine() as eng:
            return update.history(eng, check_jail_name(name))

    def volumes(self) -> list[VolumeInfo]:
        with self.engine() as eng:
            attached = {r.name: {v.name for v in r.volumes}
                        for r in records.list_jails(eng.host.store)}  # fmt: skip
            return vol.list_volumes(eng.host, attached)

    def volume_rm(self, jail: str, volume: str) -> None:
        with self.engine() as eng:
            rec = jails.record(eng, jail)
            if rec is not None and any(v.name == volume for v in rec.volumes):
                raise Conflict(
                    f"jail {jail} mounts volume {volume}: it cannot be removed",
                    hint=f"remove the VOLUME from its .rex file and `rex up` it, or "
                    f"`rex destroy --volumes {jail}`",
                )
            with eng.host.lock(jails.lock_name(jail)):
                vol.destroy(eng.host, jail, volume)

    def volume_snapshot(self, jail: str, volume: str, label: str | None) -> str:
        with self.engine() as eng:
            return vol.snapshot(eng.host, jail, volume, label)

    def exec(
        self, name: str, argv: Sequence[str], *, interactive: bool, sink: OutputSink | None
    ) -> int:
        if not argv:
            raise UsageError("no command to run", hint="rex exec NAME -- COMMAND [ARG...]")
        with self.engine() as eng:
            done = jails.exec_in(eng, check_jail_name(name), argv, interactive=interactive,
                                 on_output=sink)  # fmt: skip
            return exit_status(done.returncode)

    def cp_in(self, name: str, dst: str, tar: IO[bytes]) -> None:
        from rexcarcer import jailfs

        with self.engine() as eng:
            rec = jails.require(eng, check_jail_name(name))
            root = eng.host.storage.mountpoint(f"jails/{rec.name}")
            try:
                jailfs.import_tar(root, dst, tar)
            except (OSError, tarfile.TarError) as exc:
                raise UnsafePath(f"cannot copy into {name}:{dst}: {exc}") from exc

    def cp_out(self, name: str, src: str, out: IO[bytes]) -> None:
        from rexcarcer import jailfs

        with self.engine() as eng:
            rec = jails.require(eng, check_jail_name(name))
            root = eng.host.storage.mountpoint(f"jails/{rec.name}")
            try:
                jailfs.export_tar(root, src, out)
            except OSError as exc:
                raise NotFound(f"cannot read {name}:{src}: {exc.strerror or exc}",
                               hint="the path is read as the jail sees it") from exc  # fmt: skip

    def console(self, name: str) -> int:
        from rexcarcer.runtime.direct import LOGIN_SHELL

        return self.exec(name, list(LOGIN_SHELL), interactive=True, sink=None)

    def console_on(self, name: str, tty: int) -> int:
        """A login shell in the jail on terminal ``tty`` (the agent's side of a
        console through its API); its exit status."""
        with self.engine() as eng:
            done = jails.exec_in(eng, check_jail_name(name), CONSOLE, interactive=False, tty=tty)
            return exit_status(done.returncode)

    def export(self, name: str, out: IO[bytes]) -> ExportInfo:
        from rexcarcer.service import jailfile

        with self.engine() as eng:
            made = jailfile.export(eng, name, out)
            return ExportInfo(name, made.host, tuple((p.part, p.size) for p in made.parts))

    def import_(self, source: IO[bytes], *, name: str | None = None) -> JailInfo:
        from rexcarcer.service import jailfile

        with self.engine() as eng:
            return jailfile.import_(eng, source, name)

    def move(self, name: str, to: str) -> JailInfo:
        from rexcarcer.engine import moving

        check_jail_name(name)
        with self.engine() as eng:
            config = eng.host.config
            if not config.etcd:
                raise UsageError(
                    "rex move moves jails between the hosts of a cluster; this host is in none",
                    hint="`rex export NAME FILE` here, then `rex import FILE` on the other host",
                )
            info = moving.move(eng, name, self._target(eng, to))
            _refresh_crl(eng)
            return info

    def _target(self, eng: Engine, to: str) -> Target:
        from rexcarcer.cluster import ClusterError, membership

        hosts = {h.name: h for h in membership.list_hosts(eng.host.store)}
        if to not in hosts:
            known = ", ".join(sorted(hosts)) or "none"
            raise NotFound(f"no host {to!r} in the cluster",
                           hint=f"hosts: {known} (`rex hosts` lists them)")  # fmt: skip
        if not hosts[to].alive and to != eng.host.config.host:
            raise ClusterError(f"host {to!r} is down (its agent does not renew its lease)",
                               hint=f"start `rex agent` on {to}, or move it elsewhere")  # fmt: skip
        if self.targets is None:
            from rexcarcer.service.remote import RemoteTarget

            return RemoteTarget(eng.host.config, eng.host.store, to, eng.host.progress)
        return self.targets(eng, to)

    # -- a jail moving here (the agent's API calls these for the host moving it) ----------

    def incoming_begin(self, caller: str, name: str) -> None:
        from rexcarcer.engine import moving
        from rexcarcer.service.jailfile import host_ranges

        with self.engine() as eng:
            moving.accept_begin(eng, caller, check_jail_name(name), host_ranges(eng.host.config))

    def incoming_part(self, caller: str, name: str, part: str, since: str | None) -> Incoming:
        """Check that ``caller`` may send this part here, before its stream is read;
        the receive then runs on the returned engine (closed by ``Incoming``)."""
        from rexcarcer.engine import moving

        eng = self.open_engine()
        try:
            temp = moving.accept_part(eng, caller, check_jail_name(name), part, since)
        except BaseException:
            eng.close()
            raise
        return Incoming(eng, temp)

    def incoming_commit(
        self, caller: str, name: str, label: str, osrelease: str | None, revision: int
    ) -> JailInfo:
        from rexcarcer.engine import moving
        from rexcarcer.service.jailfile import host_ranges

        with self.engine() as eng:
            return moving.accept_commit(eng, caller, check_jail_name(name), label=label,
                                        osrelease=osrelease, revision=revision,
                                        ranges=host_ranges(eng.host.config))  # fmt: skip

    def incoming_abort(self, caller: str, name: str) -> None:
        from rexcarcer.engine import moving

        with self.engine() as eng:
            moving.accept_abort(eng, caller, check_jail_name(name))

    def ls(self) -> list[JailInfo]:
        with self.engine() as eng:
            return jails.list_jails(eng)

    def logs(self, name: str, *, lines: int | None, follow: bool, sink: OutputSink) -> None:
        from rexcarcer.logs import LogsError, reader, service

        check_jail_name(name)
        with self.engine() as eng:
            paths = service.paths_for(eng.host.config)
            path = paths.jail_log(name)
            if not path.exists():
                if jails.record(eng, name) is None:
                    raise NotFound(f"no jail named {name!r} and no log for it",
                                   hint="`rex ls` lists the jails")  # fmt: skip
                if service.collector_pid(paths) is None:
                    raise LogsError(
                        f"no log for {name} yet, and the log collector is not running",
                        hint="start it with `rex host serve` (or `rex host setup`); "
                        "see `rex doctor`",
                    )
        if not path.exists() and not follow:
            return
        try:
            shown, offset = reader.tail(path, lines) if path.exists() else ([], 0)
        except OSError as exc:
            raise LogsError(f"cannot read {path}: {exc}") from exc
        for line in shown:
            sink(line)
        if follow:
            reader.follow(path, offset, sink)

    def close(self) -> None:
        pass


@dataclass
class Incoming:
    """A stream of a moving jail, checked, to be received into ``temp``."""

    engine: Engine
    temp: str

    def receive(self, stream: IO[bytes]) -> None:
        try:
            self.engine.host.storage.receive(self.temp, stream)
        finally:
            self.engine.close()


def _refresh_crl(eng: Engine) -> None:
    """The jail's certificate here was superseded by the one its new host issued:
    this host's jail CRL lists it from now on."""
    from rexcarcer.errors import RexError

    try:
        from rexcarcer.pki import ca, jailca
        from rexcarcer.pki.hook import jail_ca_paths, refresh_crl

        paths = jail_ca_paths(eng.host)
        if paths.exists():
            refresh_crl(eng.host, jailca.load(paths), ca.utcnow())
    except RexError as exc:
        eng.host.progress.step(f"cannot refresh this host's jail CRL: {exc.message}")
