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
    from rexcarcer.storage.zfs import LAYOUT_SEEN, ZfsStorage, serial_lock_for

    runner = SubprocessRunner()
    return Host(
        config=config,
        runner=runner,
        # the agent opens a host per request: the layout is looked at once
        storage=ZfsStorage(
            runner,
            config.dataset,
            serial_lock=serial_lock_for(),
            timeout=config.zfs_timeout,
            layout_seen=LAYOUT_SEEN,
        ),
        platform=platform_for(config, runner),
        store=open_store(config),
        progress=progress or QuietProgress(),
    )


def open_dry_host(config: Config, *, foreign: bool, progress: Progress | None = None) -> Host:
    """A host for a dry run (``rex plan --platform``, ``rex host setup --dry-run``):
    this machine's storage and state for reading, never a new state directory
    (an empty in-memory store instead), and for another OS (``foreign``) a
    platform whose runner runs nothing."""
    from rexcarcer.run import NoRunner
    from rexcarcer.state.memory import MemoryStore
    from rexcarcer.storage.zfs import ZfsStorage, serial_lock_for

    runner = SubprocessRunner()
    store: Store = open_store(config) if config.db_path.exists() else MemoryStore()
    none = NoRunner(fresh=fresh_host_reads(config.runtime))
    return Host(
        config=config,
        runner=none if foreign else runner,
        storage=ZfsStorage(
            runner, config.dataset, serial_lock=serial_lock_for(), timeout=config.zfs_timeout
        ),
        platform=platform_for(config, none if foreign else runner),
        store=store,
        progress=progress or QuietProgress(),
    )


def fresh_host_reads(kind: PlatformKind) -> dict[tuple[str, ...], tuple[int, str, str]]:
    """What the network policy reads on a host of ``kind`` (its addresses, rex's
    firewall rules), answered as on a fresh host, for ``rex plan --platform``:
    the configured addresses only (netpolicy/facts.py adds the jail subnet's),
    nothing of rex's loaded, so the plan shows every load."""
    if kind is PlatformKind.FREEBSD:
        from rexcarcer.firewall import pf
        from rexcarcer.platform.freebsd import addresses_argv

        return {
            tuple(addresses_argv()): (0, "", ""),
            # pfctl -s Anchors below an anchor nothing was loaded into
            tuple(pf.anchors_argv()): (1, "", "pfctl: Anchor 'rexcarcer' not found.\n"),
            tuple(pf.main_argv("nat")): (0, "", ""),
            tuple(pf.main_argv("rules")): (0, "", ""),
        }
    if kind is PlatformKind.LINUX:
        from rexcarcer.firewall import nft
        from rexcarcer.platform.linux import addresses_argv as ip_addresses_argv

        return {
            tuple(ip_addresses_argv()): (0, "[]", ""),
            # nft(8) list of a table that does not exist
            tuple(nft.list_argv()): (1, "", "Error: No such file or directory\n"),
        }
    return {}


def default_hooks(config: Config) -> list[JailHook]:
    """The jail's health record (first: DNS reads it), DNS records (when unbound
    answers, or REX_DNS=on), the jail's TLS identity, syslog forwarding, published
    ports; in this order (taken down in reverse: a jail's ports go first)."""
    from rexcarcer.dns.hook import dns_hook
    from rexcarcer.health.hook import HealthHook
    from rexcarcer.logs.hook import LogHook
    from rexcarcer.netpolicy.hook import PublishHook
    from rexcarcer.pki.hook import IdentityHook

    hooks: list[JailHook] = [HealthHook()]
    dns = dns_hook(config)  # None when DNS is off or no unbound is set up
    if dns is not None:
        hooks.append(dns)
    hooks += [IdentityHook(), LogHook(), PublishHook()]
    return hooks


def engine_for(host: Host) -> Engine:
    from rexcarcer.base.source import Bases
    from rexcarcer.netpolicy.hook import default_policy
    from rexcarcer.secret.source import Secrets

    return Engine(host=host, bases=Bases(), hooks=default_hooks(host.config),
                  policy=default_policy(), secrets=Secrets())  # fmt: skip


def open_engine(config: Config, progress: Progress | None = None) -> Engine:
    return engine_for(open_host(config, progress))
