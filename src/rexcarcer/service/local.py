"""The jail service in this process, on this host's engine (the first door).

Each call opens the engine (store connection, drivers) and closes it when done,
so one ``LocalService`` serves a CLI command or, in an agent, one request per
thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rexcarcer.engine import build as builder
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import NotFound, UsageError
from rexcarcer.model.jail import JailInfo
from rexcarcer.model.plan import Action
from rexcarcer.names import check_jail_name
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink, exit_status


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

    def destroy(self, name: str) -> None:
        with self.engine() as eng:
            jails.destroy(eng, check_jail_name(name))

    def exec(
        self, name: str, argv: Sequence[str], *, interactive: bool, sink: OutputSink | None
    ) -> int:
        if not argv:
            raise UsageError("no command to run", hint="rex exec NAME -- COMMAND [ARG...]")
        with self.engine() as eng:
            done = jails.exec_in(eng, check_jail_name(name), argv, interactive=interactive,
                                 on_output=sink)  # fmt: skip
            return exit_status(done.returncode)

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
