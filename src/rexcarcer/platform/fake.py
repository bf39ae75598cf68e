"""A platform for unit tests: the in-memory runtime, routes in memory, and the
file layouts of a real platform (``like``: Linux's by default, FreeBSD's to
test what rex writes there), so nothing is run."""

from __future__ import annotations

import socket
from pathlib import Path

from rexcarcer.firewall.fake import FakeFirewall
from rexcarcer.platform.base import Address, Network, PeerIds, PlatformConfig, UnboundLayout
from rexcarcer.platform.freebsd import FreeBSDPlatform
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.platform.linux import LinuxPlatform
from rexcarcer.run import Runner
from rexcarcer.runtime.base import Runtime
from rexcarcer.runtime.fake import FakeRuntime


class MemoryRoutes:
    def __init__(self) -> None:
        self.table: dict[Network, Address] = {}

    def current(self) -> dict[Network, Address]:
        return dict(self.table)

    def add(self, net: Network, via: Address) -> None:
        self.table[net] = via

    def delete(self, net: Network) -> None:
        self.table.pop(net, None)


class FakePlatform:
    kind = PlatformKind.FAKE
    collector_freebind = True

    def __init__(
        self,
        runner: Runner,
        config: PlatformConfig,
        runtime: Runtime | None = None,
        *,
        like: PlatformKind = PlatformKind.LINUX,
    ) -> None:
        self.runner = runner
        self.config = config
        self.runtime: Runtime = runtime if runtime is not None else FakeRuntime()
        self.routes = MemoryRoutes()
        self.firewall = FakeFirewall()
        # what host_addresses answers: the jail-subnet address, as on a real host
        # once its bridge is up; tests add the addresses of other interfaces
        self.addresses: list[Address] = [config.host_address]
        # file layouts only: nothing of the real platform is run
        self._files: LinuxPlatform | FreeBSDPlatform = (
            FreeBSDPlatform(runner, config) if like is PlatformKind.FREEBSD
            else LinuxPlatform(runner, config)
        )  # fmt: skip
        self._linux = LinuxPlatform(runner, config)
        self.forwarding = False

    def tools(self) -> tuple[str, ...]:
        return ()

    def host_addresses(self) -> tuple[Address, ...]:
        return tuple(self.addresses)

    def unbound_layout(self) -> UnboundLayout:
        return self._files.unbound_layout()

    def write_syslog_forwarding(self, root: Path, target: Address, port: int) -> None:
        self._files.write_syslog_forwarding(root, target, port)

    def enable_forwarding(self) -> None:
        self.forwarding = True

    def process_start(self, pid: int) -> int | None:
        return self._linux.process_start(pid)

    def process_alive(self, pid: int, start: int | None = None) -> bool:
        return self._linux.process_alive(pid, start)

    def peer_ids(self, sock: socket.socket) -> PeerIds:
        return self._linux.peer_ids(sock)
