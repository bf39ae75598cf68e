"""One host's drivers, wired from the configuration (or injected by tests)."""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from rexcarcer.config import Config
from rexcarcer.engine.hooks import JailHook, default_hooks
from rexcarcer.errors import StateError
from rexcarcer.run import Runner, SubprocessRunner
from rexcarcer.runtime.base import Runtime, RuntimeKind
from rexcarcer.state.base import Store
from rexcarcer.storage.base import Storage


class Progress(Protocol):
    """How the engine reports long work; the CLI draws it, tests record it."""

    def step(self, message: str) -> None: ...

    def output(self, line: str) -> None: ...


@dataclass
class QuietProgress:
    messages: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.messages.append(message)

    def output(self, line: str) -> None:
        self.lines.append(line)


@dataclass
class Host:
    config: Config
    runner: Runner
    storage: Storage
    runtime: Runtime
    store: Store
    progress: Progress = field(default_factory=QuietProgress)
    hooks: list[JailHook] = field(default_factory=list)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A host-local exclusive lock (image builds, base imports)."""
        path = self.config.root / "locks" / f"{name}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = path.open("w")
        except OSError as exc:
            raise StateError(f"cannot take lock {path}: {exc}") from exc
        with fd:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield

    @contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        """Like ``lock`` but never waits: yields whether the lock was taken."""
        path = self.config.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    def close(self) -> None:
        self.store.close()


def instance_token(config: Config) -> str:
    """Distinguishes this state root's host objects (netns names) from another's."""
    return hashlib.sha256(str(config.root).encode()).hexdigest()[:6]


def jail_routes(config: Config) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """What a Linux jail reaches through its host: in a cluster, the other hosts'
    jail subnets (the cluster CIDR). FreeBSD jails share the host's routing
    table, so there this is not needed."""
    if config.etcd and config.cluster_cidr is not None:
        return (config.cluster_cidr,)
    return ()


def make_runtime(config: Config, runner: Runner) -> Runtime:
    if config.runtime is RuntimeKind.LINUX:
        from rexcarcer.runtime.linux import LinuxRuntime

        host_if = ipaddress.ip_interface(f"{config.host_address}/{config.subnet.prefixlen}")
        return LinuxRuntime(
            runner,
            run_dir=config.root / "run",
            bridge=config.interface,
            host_address=host_if,
            token=instance_token(config),
            routes=jail_routes(config),
        )
    if config.runtime is RuntimeKind.FREEBSD:
        from rexcarcer.runtime.freebsd import FreeBSDRuntime

        return FreeBSDRuntime(runner)
    from rexcarcer.runtime.fake import FakeRuntime

    return FakeRuntime()


def open_store(config: Config) -> Store:
    """etcd when the host is in a cluster (REX_ETCD), else the embedded SQLite store."""
    if config.etcd:
        from rexcarcer.state.etcd import open_etcd

        return open_etcd(config)
    from rexcarcer.state.sqlite import SqliteStore

    return SqliteStore(config.db_path)


def open_host(config: Config, progress: Progress | None = None) -> Host:
    from rexcarcer.storage.zfs import ZfsStorage, serial_lock_for

    runner = SubprocessRunner()
    return Host(
        config=config,
        runner=runner,
        storage=ZfsStorage(runner, config.dataset, serial_lock=serial_lock_for()),
        runtime=make_runtime(config, runner),
        store=open_store(config),
        progress=progress or QuietProgress(),
        hooks=default_hooks(config),
    )
