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
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from rexcarcer.errors import ConfigError
from rexcarcer.platform.kinds import DEFAULTS, PlatformKind, detect

# Not a setting (no TOML key): only the environment of a test run allows runtime=fake.
TESTING = "REX_TESTING"
TESTING_ENV = {"REX_RUNTIME": "fake", TESTING: "1"}  # what unit tests give load_config


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
    Setting("ca_bundle", "REX_CA_BUNDLE", "CA certificates (PEM) for https base downloads"),
    Setting("dns", "REX_DNS", "publish jails in DNS: auto (if unbound runs), on, off"),
    Setting("dns_forward", "REX_DNS_FORWARD", "rex's unbound forwards to these; unset: recurse"),
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
)


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
    ca_bundle: Path | None
    dns: str
    dns_forward: tuple[str, ...]
    agent_socket: Path
    agent_group: str
    chrony_socket: Path | None = None

    @property
    def host_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The host's own address in the jail subnet: the first usable one."""
        return ipaddress.ip_address(next(iter(self.subnet.hosts())).compressed)

    @property
    def db_path(self) -> Path:
        return self.root / "state.db"


def _defaults() -> dict[str, str]:
    kind = detect()
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
        "dns": "auto",
        "dns_forward": "",
        "agent_socket": "",
        "agent_group": "",
        "chrony_socket": "",
    }


def _config_file(explicit: Path | None, root: str) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"configuration file not found: {explicit}")
        return explicit
    system = Path(DEFAULTS[detect()]["config_file"])
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
) -> Config:
    """Merge defaults, the TOML file and the environment (``--root`` beats all)."""
    env = os.environ if environ is None else environ
    values = _defaults()
    root_hint = str(root) if root else env.get("REX_ROOT", values["root"])
    path = _config_file(config_file, root_hint)
    if path is not None:
        values.update(_read_toml(path))
    for setting in SETTINGS:
        if env.get(setting.env):
            values[setting.key] = env[setting.env]
    if root is not None:
        values["root"] = str(root)
    return _build(values, testing=env.get(TESTING) == "1")


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
    if len(v["interface"]) > 15:
        raise ConfigError(f"interface name {v['interface']!r} is longer than 15 characters")
    root = Path(v["root"]).absolute()
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
        interface=v["interface"],
        ca_bundle=Path(v["ca_bundle"]) if v.get("ca_bundle") else None,
        dns=_dns_mode(v["dns"]),
        dns_forward=_forwarders(v["dns_forward"]),
        agent_socket=Path(v["agent_socket"] or root / "run" / "agent.sock").absolute(),
        agent_group=v["agent_group"].strip(),
        chrony_socket=Path(v["chrony_socket"]).absolute() if v["chrony_socket"] else None,
    )


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


def describe(config: Config) -> dict[str, str]:
    """The effective configuration, for ``rex doctor`` and ``--debug``."""
    return {f.name: str(getattr(config, f.name)) for f in fields(config)}
