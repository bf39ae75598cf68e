"""The jail service in this process, on this host's engine (the first door).

Each call opens the engine (store connection, drivers) and closes it when done,
so one ``LocalService`` serves a CLI command or, in an agent, one request per
thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rexcarcer.engine import build as builder
from rexcarcer.engine import jails, update
from rexcarcer.engine import volumes as vol
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import Conflict, NotFound, UnsafePath, UsageError
from rexcarcer.model.jail import GenerationInfo, JailInfo, VolumeInfo
from rexcarcer.model.plan import Action
from rexcarcer.names import check_jail_name
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink, exit_status
from rexcarcer.state import records


class LocalService:
    def __init__(self, open_engine: Callable[[], Engine]) -> None:
        self.open_engine = open_engine

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

    def cp_in(self, name: str, dst: str, tar: bytes) -> None:
        import shutil
        import tempfile

        from rexcarcer import jailfs
        from rexcarcer.buildctx import unpack_files

        with self.engine() as eng:
            rec = jails.require(eng, check_jail_name(name))
            root = eng.host.storage.mountpoint(f"jails/{rec.name}")
            work = Path(tempfile.mkdtemp(prefix="cp-", dir=eng.host.config.root))
            try:
                for src in unpack_files(tar, work):
                    # as cp(1): into DST when it is a directory (or ends in /), else as DST
                    into = dst.endswith("/") or jailfs.is_dir(root, dst)
                    jailfs.copy_into(root, src, f"{dst.rstrip('/')}/{src.name}" if into else dst)
            except OSError as exc:
                raise UnsafePath(f"cannot copy into {name}:{dst}: {exc}") from exc
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def cp_out(self, name: str, src: str) -> bytes:
        import io

        from rexcarcer import jailfs

        with self.engine() as eng:
            rec = jails.require(eng, check_jail_name(name))
            root = eng.host.storage.mountpoint(f"jails/{rec.name}")
            buf = io.BytesIO()
            try:
                jailfs.export_tar(root, src, buf)
            except OSError as exc:
                raise NotFound(f"cannot read {name}:{src}: {exc.strerror or exc}",
                               hint="the path is read as the jail sees it") from exc  # fmt: skip
            return buf.getvalue()

    def console(self, name: str) -> int:
        from rexcarcer.runtime.direct import LOGIN_SHELL

        return self.exec(name, list(LOGIN_SHELL), interactive=True, sink=None)

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
