"""Configuration: built-in defaults, then a TOML file, then ``REX_*`` variables.

Each setting is declared once in ``SETTINGS``; the TOML key, the environment
variable and the documentation come from that one declaration.

``runtime = "fake"`` (the in-memory runtime of the unit tests, which starts no
jail) is refused unless ``REX_TESTING=1`` is in the environment given to
``load_config``: a typo or a copied test setting must never leave a production
host believing it runs jails. The unit tests pass ``TESTING_ENV``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from rexcarcer.errors import ConfigError
from rexcarcer.platform.kinds import DEFAULTS, PlatformKind, detect

# Not a setting (no TOML key): only the environment of a test run allows runtime=fake.
TESTING = "REX_TESTING"
TESTING_ENV = {"REX_RUNTIME": "fake", TESTING: "1"}  # what unit tests give load_config
# Not a setting either: a file that names the host's boot in place of the OS's
# (Linux: /proc/sys/kernel/random/boot_id), so that an integration test can make
# rex see a new boot after a simulated reboot (tests/integration/reboot.py).
# Only a test run (REX_TESTING=1) may use it: on a real host a changed "boot"
# would make the agent start every jail a RESTART policy left down.
BOOT_ID_FILE = "REX_BOOT_ID_FILE"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    env: str
    doc: str


SETTINGS = (
    Setting("root", "REX_ROOT", "state directory (SQLite store, caches, run files)"),
    Setting("dataset", "REX_DATASET", "parent ZFS dataset, e.g. zroot/rex"),
    Setting("subnet", "REX_SUBNET", "this host's jail subnet; its first address is the host's"),
    Setting("zone", "REX_ZONE", "cluster DNS zone"),
    Setting("unbound_control", "REX_UNBOUND_CONTROL", "unbound control socket"),
    Setting("etcd", "REX_ETCD", "etcd endpoints, comma-separated; unset = single host"),
    Setting("etcd_ca", "REX_ETCD_CA", "CA certificates (PEM) that sign etcd's https endpoints"),
    Setting("etcd_cert", "REX_ETCD_CERT", "client certificate (PEM) for etcd --client-cert-auth"),
    Setting("etcd_key", "REX_ETCD_KEY", "the client certificate's private key (PEM)"),
    Setting("host", "REX_HOST", "this host's name in the cluster"),
    Setting(
        "cluster_cidr",
        "REX_CLUSTER_CIDR",
        "the cluster's jail CIDR (written by `rex cluster join`); jails route it via the host",
    ),
    Setting("runtime", "REX_RUNTIME", "jail runtime: freebsd or linux (default: from the OS)"),
    Setting("interface", "REX_INTERFACE", "host interface jail addresses live on"),
    Setting(
        "public_ips",
        "REX_PUBLIC_IPS",
        "public ranges for jails' fixed IPs, each CIDR@interface, comma-separated",
    ),
    Setting(
        "nat",
        "REX_NAT",
        "masquerade the jail subnet out of the host's uplink (egress NAT): true or false "
        "(default false; docs/rexfile.md PUBLISH)",
    ),
    Setting(
        "nat_interface",
        "REX_NAT_INTERFACE",
        "the uplink jails' traffic leaves through with nat on (required on FreeBSD; "
        "Linux: unset = every interface)",
    ),
    Setting(
        "publish_allow",
        "REX_PUBLISH_ALLOW",
        "host ports below 1024 that PUBLISH may take, comma-separated ports or ranges "
        "(e.g. 80,443 or 1-1023); unset: none",
    ),
    Setting(
        "api_port",
        "REX_API_PORT",
        "port of the agent's mutual-TLS API, 7443 by default; jails never reach it",
    ),
    Setting("ca_bundle", "REX_CA_BUNDLE", "CA certificates (PEM) for https base downloads"),
    Setting("dns", "REX_DNS", "publish jails in DNS: auto (if unbound runs), on, off"),
    Setting("dns_forward", "REX_DNS_FORWARD", "rex's unbound forwards to these; unset: recurse"),
    Setting(
        "generations",
        "REX_GENERATIONS",
        "earlier generations of a jail kept after an update in place (rex rollback); 0: none",
    ),
    Setting(
        "chrony_socket",
        "REX_CHRONY_SOCKET",
        "chronyd's command socket, for `rex doctor` (default: chronyc's, /run/chrony/chronyd.sock)",
    ),
    Setting(
        "agent_socket",
        "REX_AGENT_SOCKET",
        "the host agent's UNIX socket (default: "
        "$REX_ROOT/run/agent.sock); rex uses the agent when it answers there",
    ),
    Setting(
        "agent_group",
        "REX_AGENT_GROUP",
        "a group whose members may use the agent's "
        "socket (root-equivalent; docs/security.md); unset: root only",
    ),
    Setting(
        "log_max_size",
        "REX_LOG_MAX_SIZE",
        "a jail's log file is rotated at this size (bytes, or with K, M, G), one old file "
        "kept; 0: no limit (docs/logs.md)",
    ),
    Setting(
        "log_rate_limit",
        "REX_LOG_RATE_LIMIT",
        "messages the log collector accepts from all jails, as BURST/SECONDS; 0: no limit",
    ),
    Setting(
        "zfs_timeout",
        "REX_ZFS_TIMEOUT",
        "seconds a zfs command may take before rex kills it and fails with exit 85 "
        "(the ZFS daemon is not answering; docs/faults.md)",
    ),
)

MIN_LOG_SIZE = 64 << 10  # below this, rsyslog would run the rotation very often


@dataclass(frozen=True, slots=True)
class PublicRange:
    """A public range the host declares for jails' fixed IPs (``public_ips``):
    a jail's ``IP`` may lie in it, and its address then lives on ``interface``."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    interface: str

    def __str__(self) -> str:
        return f"{self.network}@{self.interface}"


@dataclass(frozen=True, slots=True)
class Config:
    root: Path
    dataset: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    zone: str
    unbound_control: Path
    etcd: tuple[str, ...]
    etcd_ca: Path | None
    etcd_cert: Path | None
    etcd_key: Path | None
    host: str
    cluster_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    runtime: PlatformKind  # the setting is called runtime (REX_RUNTIME)
    interface: str
    public_ips: tuple[PublicRange, ...]
    nat: bool
    nat_interface: str  # "" : not set
    publish_allow: tuple[tuple[int, int], ...]  # (first, last) host ports below 1024
    api_port: int
    ca_bundle: Path | None
    dns: str
    dns_forward: tuple[str, ...]
    generations: int
    agent_socket: Path
    agent_group: str
    log_max_size: int  # bytes; 0: unbounded
    log_rate_limit: tuple[int, int]  # (burst, seconds); (0, 0): none
    chrony_socket: Path | None = None
    boot_id_file: Path | None = None  # REX_BOOT_ID_FILE (test runs only); None: the OS's
    zfs_timeout: float = 30.0  # storage/zfs.py DEFAULT_TIMEOUT says why 30 s

    @property
    def host_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The host's own address in the jail subnet: the first usable one."""
        return ipaddress.ip_address(next(iter(self.subnet.hosts())).compressed)

    def publish_allowed(self, port: int) -> bool:
        """Whether PUBLISH may take host port ``port`` (below 1024 only when allowed)."""
        return port >= PRIVILEGED_PORTS or any(a <= port <= b for a, b in self.publish_allow)

    def public_range_of(
        self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> PublicRange | None:
        """The declared public range ``addr`` lies in, if any."""
        return next((r for r in self.public_ips if addr in r.network), None)

    def interface_for(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
        """The host interface a jail address lives on: its public range's, or ``interface``."""
        found = self.public_range_of(addr) if addr is not None else None
        return found.interface if found is not None else self.interface

    @property
    def db_path(self) -> Path:
        return self.root / "state.db"


def _defaults(kind: PlatformKind) -> dict[str, str]:
    os_defaults = DEFAULTS[kind]
    return {
        "root": os_defaults["root"],
        "dataset": os_defaults["dataset"],
        # A documentation range (RFC 5737): it collides with nothing on a real
        # network; production hosts set their own subnet.
        "subnet": "198.51.100.0/24",
        "zone": "rex.internal",
        # FreeBSD: local_unbound's socket; Linux: rex's own unbound, under the
        # state directory actually in use (filled in by _build)
        "unbound_control": os_defaults["unbound_control"],
        "etcd": "",
        "cluster_cidr": "",
        "host": socket.gethostname().split(".")[0] or "localhost",
        "runtime": str(kind),
        "interface": "rex0",
        "public_ips": "",
        "nat": "false",
        "nat_interface": "",
        "publish_allow": "",
        "api_port": "7443",
        "dns": "auto",
        "dns_forward": "",
        "generations": "2",
        "agent_socket": "",
        "agent_group": "",
        # at most about 2 x 10 MiB per jail on the host (docs/logs.md)
        "log_max_size": "10M",
        # 10000 messages a second on average from all jails, bursts of 50000
        "log_rate_limit": "50000/5",
        "chrony_socket": "",
        "zfs_timeout": "30",
    }


def _config_file(explicit: Path | None, root: str, kind: PlatformKind) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"configuration file not found: {explicit}")
        return explicit
    system = Path(DEFAULTS[kind]["config_file"])
    for candidate in (Path(root) / "rexcarcer.toml", system):
        try:
            if candidate.is_file():
                return candidate
        except PermissionError:
            # a state directory only root may enter (a user of the agent's socket
            # runs rex without it): the system-wide file, or the defaults
            continue
    return None


def _read_toml(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from exc
    known = {s.key for s in SETTINGS}
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(
                f"{path}: unknown setting {key!r}",
                hint=f"known settings: {', '.join(sorted(known))}",
            )
        out[key] = ",".join(value) if isinstance(value, list) else str(value)
    return out


def load_config(
    *,
    config_file: Path | None = None,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: PlatformKind | None = None,
) -> Config:
    """Merge defaults, the TOML file and the environment (``--root`` beats all).
    ``platform``: the configuration as it would be on that OS (its defaults and
    system file; the runtime is that OS's), for ``--platform`` dry runs."""
    env = os.environ if environ is None else environ
    kind = platform or detect()
    values = _defaults(kind)
    root_hint = str(root) if root else env.get("REX_ROOT", values["root"])
    path = _config_file(config_file, root_hint, kind)
    if path is not None:
        values.update(_read_toml(path))
    for setting in SETTINGS:
        if env.get(setting.env):
            values[setting.key] = env[setting.env]
    if root is not None:
        values["root"] = str(root)
    if platform is not None:
        values["runtime"] = str(platform)
    config = _build(values, testing=env.get(TESTING) == "1")
    if env.get(BOOT_ID_FILE):
        if env.get(TESTING) != "1":
            raise ConfigError(
                f"{BOOT_ID_FILE} is set: only a test run may name the host's boot itself",
                hint=f"unset {BOOT_ID_FILE} (or set {TESTING}=1 in a test's environment)",
            )
        config = replace(config, boot_id_file=Path(env[BOOT_ID_FILE]).absolute())
    return config


def _parse(key: str, text: str, conv: Callable[[str], object]) -> object:
    try:
        return conv(text)
    except ValueError as exc:
        setting = next(s for s in SETTINGS if s.key == key)
        raise ConfigError(
            f"bad value for {key} ({setting.env}): {text!r}: {exc}", hint=setting.doc
        ) from exc


def _build(v: dict[str, str], *, testing: bool = False) -> Config:
    subnet = _parse("subnet", v["subnet"], lambda t: ipaddress.ip_network(t, strict=True))
    assert isinstance(subnet, ipaddress.IPv4Network | ipaddress.IPv6Network)
    if subnet.num_addresses < 4:
        raise ConfigError(f"jail subnet {subnet} is too small", hint="use a /29 or larger")
    runtime = _parse("runtime", v["runtime"], PlatformKind)
    assert isinstance(runtime, PlatformKind)
    if runtime is PlatformKind.FAKE and not testing:
        raise ConfigError(
            "runtime 'fake' is the unit tests' in-memory runtime: it starts no jail",
            hint="set runtime (REX_RUNTIME) to freebsd or linux, or leave it unset; "
            f"only a test run ({TESTING}=1) may use the fake runtime",
        )
    if "/" not in v["dataset"] or v["dataset"].startswith("/") or " " in v["dataset"]:
        raise ConfigError(
            f"bad dataset {v['dataset']!r}", hint="REX_DATASET is POOL/PATH, e.g. zroot/rex"
        )
    interface = _interface("interface", v["interface"])
    root = Path(v["root"]).absolute()
    if _bool("nat", v["nat"]) and runtime is PlatformKind.FREEBSD and not v["nat_interface"]:
        raise ConfigError(
            "nat is on but nat_interface (REX_NAT_INTERFACE) is not set",
            hint="pf translates on one interface (pf.conf(5) nat-rule): name the uplink, "
            'e.g. nat_interface = "em0"',
        )
    return Config(
        root=root,
        dataset=v["dataset"].rstrip("/"),
        subnet=subnet,
        zone=v["zone"].strip(".").lower(),
        unbound_control=Path(v["unbound_control"] or root / "unbound" / "control.sock"),
        etcd=tuple(e for e in v["etcd"].split(",") if e),
        **_etcd_tls(v),
        host=v["host"],
        cluster_cidr=_cluster_cidr(v["cluster_cidr"]),
        runtime=runtime,
        interface=interface,
        public_ips=_public_ips(v["public_ips"], subnet),
        nat=_bool("nat", v["nat"]),
        nat_interface=_interface("nat_interface", v["nat_interface"]) if v["nat_interface"] else "",
        publish_allow=_port_ranges("publish_allow", v["publish_allow"]),
        api_port=_port("api_port", v["api_port"]),
        ca_bundle=Path(v["ca_bundle"]) if v.get("ca_bundle") else None,
        dns=_dns_mode(v["dns"]),
        dns_forward=_forwarders(v["dns_forward"]),
        generations=_count("generations", v["generations"]),
        zfs_timeout=_seconds("zfs_timeout", v["zfs_timeout"]),
        agent_socket=Path(v["agent_socket"] or root / "run" / "agent.sock").absolute(),
        agent_group=v["agent_group"].strip(),
        log_max_size=_log_size(v["log_max_size"]),
        log_rate_limit=_rate_limit(v["log_rate_limit"]),
        chrony_socket=Path(v["chrony_socket"]).absolute() if v["chrony_socket"] else None,
    )


# Interface names as both kernels take them (IFNAMSIZ is 16 with the NUL on
# Linux and FreeBSD), starting with a letter as pf.conf(5) wants an interface
# name to (firewall/rules.py checks the same before a name reaches a rule).
_IFACE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def _interface(key: str, name: str) -> str:
    setting = next(s for s in SETTINGS if s.key == key)
    if len(name) > 15:
        raise ConfigError(
            f"interface name {name!r} ({setting.env}) is longer than 15 characters",
            hint=setting.doc,
        )
    if not _IFACE.fullmatch(name):
        raise ConfigError(
            f"bad interface name {name!r} ({setting.env})",
            hint="letters, digits, '_', '.' and '-', starting with a letter",
        )
    return name


def _public_ips(
    text: str, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> tuple[PublicRange, ...]:
    """``CIDR@interface,...``: each CIDR strict (no host bits), each interface
    named as ``interface`` is, none overlapping the jail subnet or another."""
    out: list[PublicRange] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        cidr, at, iface = item.rpartition("@")
        if not at or not cidr:
            raise ConfigError(
                f"bad value for public_ips (REX_PUBLIC_IPS): {item!r} has no '@interface'",
                hint="write CIDR@interface, e.g. 198.51.100.16/28@em0",
            )
        net = _parse("public_ips", cidr, lambda t: ipaddress.ip_network(t, strict=True))
        assert isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
        found = PublicRange(net, _interface("public_ips", iface))
        clash = subnet if net.overlaps(subnet) else next(
            (r.network for r in out if r.network.overlaps(net)), None
        )  # fmt: skip
        if clash is not None:
            raise ConfigError(
                f"public range {found} overlaps {clash}",
                hint="public ranges lie outside the jail subnet and apart from each other",
            )
        out.append(found)
    return tuple(out)


def _port(key: str, text: str) -> int:
    port = _parse(key, text.strip(), int)
    assert isinstance(port, int)
    if not 1 <= port <= 65535:
        setting = next(s for s in SETTINGS if s.key == key)
        raise ConfigError(f"bad value for {key} ({setting.env}): {text!r} is not a port",
                          hint="a port is a number from 1 to 65535")  # fmt: skip
    return port


def _bool(key: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0", ""):
        return False
    setting = next(s for s in SETTINGS if s.key == key)
    raise ConfigError(f"bad value for {key} ({setting.env}): {text!r}",
                      hint="use true or false")  # fmt: skip


PRIVILEGED_PORTS = 1024  # below it a port is the host administrator's to give away


def _port_ranges(key: str, text: str) -> tuple[tuple[int, int], ...]:
    """``80,443,1000-1023``: ports below 1024, each a port or FIRST-LAST."""
    setting = next(s for s in SETTINGS if s.key == key)
    out: list[tuple[int, int]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        first, sep, last = item.partition("-")
        try:
            pair = (int(first), int(last) if sep else int(first))
        except ValueError:
            pair = (0, 0)
        if not 1 <= pair[0] <= pair[1] < PRIVILEGED_PORTS:
            raise ConfigError(
                f"bad value for {key} ({setting.env}): {item!r}",
                hint="list ports or FIRST-LAST ranges from 1 to 1023 (ports from 1024 up "
                "need no allow), e.g. 80,443",
            )
        out.append(pair)
    return tuple(out)


def _etcd_tls(v: Mapping[str, str]) -> dict[str, Path | None]:
    paths = {k: Path(v[k]).absolute() if v.get(k) else None
             for k in ("etcd_ca", "etcd_cert", "etcd_key")}  # fmt: skip
    if (paths["etcd_cert"] is None) != (paths["etcd_key"] is None):
        raise ConfigError(
            "etcd_cert and etcd_key go together",
            hint="set both REX_ETCD_CERT and REX_ETCD_KEY (or neither)",
        )
    return paths


def _cluster_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not text.strip():
        return None
    net = _parse("cluster_cidr", text.strip(), lambda t: ipaddress.ip_network(t, strict=True))
    assert isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
    return net


def _count(key: str, text: str) -> int:
    value = _parse(key, text.strip(), int)
    assert isinstance(value, int)
    if value < 0:
        raise ConfigError(f"bad value for {key}: {text!r}: it cannot be negative")
    return value


def _seconds(key: str, text: str) -> float:
    value = _parse(key, text.strip(), float)
    assert isinstance(value, float)
    if not 0 < value < 86400:
        raise ConfigError(f"bad value for {key}: {text!r}: seconds, above 0 and below a day")
    return value


def _dns_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"bad value for dns (REX_DNS): {text!r}", hint="use auto, on or off")
    return mode


def _forwarders(text: str) -> tuple[str, ...]:
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item:
            addr = _parse("dns_forward", item, ipaddress.ip_address)
            out.append(str(addr))
    return tuple(out)


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B")
    unit = t[-1:] if t[-1:] in units else ""
    number = int(t[: len(t) - len(unit)])
    if number < 0:
        raise ValueError("a size is not negative")
    return number * units[unit]


def _log_size(text: str) -> int:
    size = _parse("log_max_size", text, _size)
    assert isinstance(size, int)
    if 0 < size < MIN_LOG_SIZE:
        raise ConfigError(
            f"log_max_size (REX_LOG_MAX_SIZE) {text!r} is below {MIN_LOG_SIZE >> 10}K",
            hint="rsyslog runs the rotation each time a file reaches it: use 64K or more, "
            "or 0 for no limit",
        )
    return size


def _burst_per_seconds(text: str) -> tuple[int, int]:
    if text.strip() in ("", "0"):
        return (0, 0)
    burst, sep, seconds = text.strip().partition("/")
    pair = (int(burst), int(seconds)) if sep else (-1, -1)
    if min(pair) < 1:
        raise ValueError("expected BURST/SECONDS, two whole numbers above 0, e.g. 50000/5")
    return pair


def _rate_limit(text: str) -> tuple[int, int]:
    pair = _parse("log_rate_limit", text, _burst_per_seconds)
    assert isinstance(pair, tuple)
    return pair


def describe(config: Config) -> dict[str, str]:
    """The effective configuration, for ``rex doctor`` and ``--debug``."""

    def text(value: object) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    return {f.name: text(getattr(config, f.name)) for f in fields(config)}
