"""Which drivers, platform and hooks a host gets: the one place that decides.

The engine declares what it needs (engine/base.py: hooks, a base source); the
features implement it; this module, above both, puts a host together from its
configuration. Tests build hosts from fakes instead (tests/unit/fakes.py).
"""

from __future__ import annotations

from rexcarcer.config import Config
from rexcarcer.engine.base import Engine, JailHook
from rexcarcer.errors import ConfigError
from rexcarcer.host import Host
from rexcarcer.platform.base import Platform
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.progress import Progress, QuietProgress
from rexcarcer.run import Runner, SubprocessRunner
from rexcarcer.state.base import Store


def platform_for(config: Config, runner: Runner) -> Platform:
    kind = config.runtime
    if kind is PlatformKind.LINUX:
        from rexcarcer.platform.linux import LinuxPlatform

        return LinuxPlatform(runner, config)
    if kind is PlatformKind.FREEBSD:
        from rexcarcer.platform.freebsd import FreeBSDPlatform

        return FreeBSDPlatform(runner, config)
    if kind is PlatformKind.FAKE:
        from rexcarcer.platform.fake import FakePlatform

        return FakePlatform(runner, config)
    raise ConfigError(f"no platform {kind!r}")  # pragma: no cover (an exhaustive enum)


def open_store(config: Config) -> Store:
    """etcd when the host is in a cluster (REX_ETCD), else the embedded SQLite store."""
    if config.etcd:
        from rexcarcer.cluster.store import open_etcd

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
        platform=platform_for(config, runner),
        store=open_store(config),
        progress=progress or QuietProgress(),
    )


def default_hooks(config: Config) -> list[JailHook]:
    """DNS records (when unbound answers, or REX_DNS=on), the jail's TLS identity,
    syslog forwarding, published ports; in this order (taken down in reverse:
    a jail's ports go first)."""
    from rexcarcer.dns.hook import dns_hook
    from rexcarcer.logs.hook import LogHook
    from rexcarcer.netpolicy.hook import PublishHook
    from rexcarcer.pki.hook import IdentityHook

    hooks: list[JailHook] = []
    dns = dns_hook(config)  # None when DNS is off or no unbound is set up
    if dns is not None:
        hooks.append(dns)
    hooks += [IdentityHook(), LogHook(), PublishHook()]
    return hooks


def engine_for(host: Host) -> Engine:
    from rexcarcer.base.source import Bases
    from rexcarcer.netpolicy.hook import default_policy

    return Engine(host=host, bases=Bases(), hooks=default_hooks(host.config),
                  policy=default_policy())  # fmt: skip


def open_engine(config: Config, progress: Progress | None = None) -> Engine:
    return engine_for(open_host(config, progress))
