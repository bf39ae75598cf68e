"""An in-memory runtime for unit tests: jails are records, build steps and
exec calls are recorded and answered by a handler (default: success)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rexcarcer.errors import RuntimeBackendError
from rexcarcer.run import Completed, OutputSink
from rexcarcer.runtime.base import BuildNet, HostFile, JailEnd, JailSpec, JailState, JailStatus

Handler = Callable[[str], int]


@dataclass
class FakeRuntime:
    handler: Handler = field(default=lambda command: 0)
    running: dict[str, JailSpec] = field(default_factory=dict)
    builds: list[tuple[Path, str]] = field(default_factory=list)
    networks: list[BuildNet | None] = field(default_factory=list)  # per build, in order
    cleaned: list[BuildNet] = field(default_factory=list)
    execs: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    fail_start: set[str] = field(default_factory=set)
    fail_next: int = 0  # the next N starts fail, whatever the jail
    usages: dict[str, dict[str, int]] = field(default_factory=dict)  # what usage() answers
    ended: dict[str, JailEnd] = field(default_factory=dict)  # how a jail's run ended

    def die(self, name: str, status: int | None) -> None:
        """The jail's init ends on its own with ``status`` (None: unknown)."""
        self.running.pop(name, None)
        self.ended[name] = JailEnd(status)

    def start(self, spec: JailSpec) -> None:
        if spec.name in self.fail_start or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise RuntimeBackendError(f"jail {spec.name} failed to start (fake)")
        self.ended.pop(spec.name, None)
        self.running[spec.name] = spec

    def start_commands(self, spec: JailSpec) -> list[list[str]]:
        return [["fake-jail", "start", spec.name]]

    def build_commands(
        self, root: Path, command: str, env: Mapping[str, str], network: BuildNet | None = None
    ) -> list[list[str]]:
        net = [["fake-net", network.name, str(network.address)]] if network is not None else []
        return [*net, ["/bin/sh", "-c", command]]

    def start_files(self, spec: JailSpec) -> list[HostFile]:
        return []

    def build_files(self, root: Path, network: BuildNet | None = None) -> list[HostFile]:
        return []

    def stop(self, name: str) -> None:
        self.running.pop(name, None)
        self.ended.pop(name, None)

    def status(self, names: Sequence[str], *, usage: bool = False) -> dict[str, JailStatus]:
        return {
            n: JailStatus(n, JailState.RUNNING, None, usage=self.usage(n) if usage else None)
            if n in self.running
            else JailStatus(n, JailState.STOPPED, None, self.ended.get(n))
            for n in names
        }  # fmt: skip

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        interactive: bool = False,
        on_output: OutputSink | None = None,
        tty: int | None = None,
        timeout: float | None = None,
    ) -> Completed:
        if name not in self.running:
            raise RuntimeBackendError(f"jail {name} is not running")
        self.execs.append((name, tuple(argv)))
        if tty is not None:
            return Completed(tuple(argv), fake_shell(tty))
        return Completed(tuple(argv), self.handler(" ".join(argv)))

    def build_run(
        self,
        root: Path,
        command: str,
        *,
        env: Mapping[str, str],
        on_output: OutputSink | None = None,
        network: BuildNet | None = None,
    ) -> Completed:
        self.builds.append((root, command))
        self.networks.append(network)
        code = self.handler(command)
        if on_output is not None:
            on_output(f"ran {command}\n")
        return Completed(("/bin/sh", "-c", command), code, f"ran {command}\n")

    def build_cleanup(self, network: BuildNet) -> None:
        self.cleaned.append(network)

    def remove(self, name: str) -> None:
        self.stop(name)

    def usage(self, name: str) -> dict[str, int]:
        return dict(self.usages.get(name, {})) if name in self.running else {}


def fake_shell(tty: int) -> int:
    """A shell on a terminal, for the console's tests: it answers each line
    (``size``: the terminal's rows and columns) until ``exit N``, or the hangup."""
    import fcntl
    import struct
    import termios

    os.write(tty, b"$ ")
    buf = b""
    while True:
        try:
            data = os.read(tty, 1024)
        except OSError:  # EIO: the other side hung up
            return 129
        if not data:
            return 129
        buf += data
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            words = line.strip().split()
            if words[:1] == [b"exit"]:
                return int(words[1]) if len(words) > 1 else 0
            if words == [b"size"]:
                rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(tty, termios.TIOCGWINSZ,
                                                                     bytes(8)))  # fmt: skip
                os.write(tty, f"{rows} {cols}\r\n".encode())
            else:
                os.write(tty, b"said " + line.strip() + b"\r\n")
            os.write(tty, b"$ ")
