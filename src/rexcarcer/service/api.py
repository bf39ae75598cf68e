"""The jail service API (service/__init__.py lists the doors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rexcarcer.model.jail import GenerationInfo, JailInfo, VolumeInfo
from rexcarcer.model.plan import Action
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink


class JailService(Protocol):
    def up(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> JailInfo:
        """Build (cached), create, start and publish; idempotent."""
        ...

    def plan(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> list[Action]:
        """What ``up`` would do, changing nothing."""
        ...

    def build(self, rexfile: Rexfile) -> str:
        """Run the PROVISION steps (cached); the image snapshot's full name."""
        ...

    def start(self, name: str) -> JailInfo: ...

    def stop(self, name: str) -> JailInfo: ...

    def restart(self, name: str) -> JailInfo: ...

    def destroy(self, name: str, *, volumes: bool = False) -> list[str]:
        """Destroy the jail; the names of its volumes kept (all unless ``volumes``)."""
        ...

    def rollback(self, name: str, *, to: int | None = None) -> JailInfo:
        """Make an earlier generation current again (the newest kept one by default)."""
        ...

    def history(self, name: str) -> list[GenerationInfo]: ...

    def volumes(self) -> list[VolumeInfo]: ...

    def volume_rm(self, jail: str, volume: str) -> None: ...

    def volume_snapshot(self, jail: str, volume: str, label: str | None) -> str: ...

    def exec(
        self, name: str, argv: Sequence[str], *, interactive: bool, sink: OutputSink | None
    ) -> int:
        """Run ``argv`` in the jail; its exit status (128+N when killed by signal N).
        ``interactive``: on this terminal; else the output goes to ``sink``
        (stdout and stderr merged, line by line)."""
        ...

    def ls(self) -> list[JailInfo]: ...

    def cp_in(self, name: str, dst: str, tar: bytes) -> None:
        """Unpack ``tar`` (made by the client from host files) into the jail at
        ``dst``, resolved inside the jail root."""
        ...

    def cp_out(self, name: str, src: str) -> bytes:
        """File or tree ``src`` of the jail as a tar (links kept as links)."""
        ...

    def console(self, name: str) -> int:
        """An interactive login shell in the jail, on this terminal; its exit status."""
        ...

    def logs(self, name: str, *, lines: int | None, follow: bool, sink: OutputSink) -> None:
        """The jail's collected syslog, each line to ``sink`` (``follow``: until
        interrupted)."""
        ...

    def close(self) -> None: ...
