"""An in-memory runtime for unit tests: jails are records, build steps and
exec calls are recorded and answered by a handler (default: success)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rexcarcer.errors import RuntimeBackendError
from rexcarcer.run import Completed, OutputSink
from rexcarcer.runtime.base import BuildNet, JailSpec, JailState, JailStatus

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

    def start(self, spec: JailSpec) -> None:
        if spec.name in self.fail_start or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise RuntimeBackendError(f"jail {spec.name} failed to start (fake)")
        self.running[spec.name] = spec

    def start_commands(self, spec: JailSpec) -> list[list[str]]:
        return [["fake-jail", "start", spec.name]]

    def build_commands(
        self, root: Path, command: str, env: Mapping[str, str], network: BuildNet | None = None
    ) -> list[list[str]]:
        net = [["fake-net", network.name, str(network.address)]] if network is not None else []
        return [*net, ["/bin/sh", "-c", command]]

    def stop(self, name: str) -> None:
        self.running.pop(name, None)

    def status(self, names: Sequence[str]) -> dict[str, JailStatus]:
        return {
            n: JailStatus(n, JailState.RUNNING if n in self.running else JailState.STOPPED)
            for n in names
        }

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        interactive: bool = False,
        on_output: OutputSink | None = None,
    ) -> Completed:
        if name not in self.running:
            raise RuntimeBackendError(f"jail {name} is not running")
        self.execs.append((name, tuple(argv)))
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
