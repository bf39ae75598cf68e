"""DESIGN's two example jails on a modelled FreeBSD 14 host (tests/freebsd_model.py):
`rex host setup`, then `rex up` of public-docs.rex (a 14.x base, `pkg install -y
nginx`, a public IP from a declared range) and of internal-renderer.rex (the
SERVICE jail), with the in-memory storage. They end with nginx enabled and
started by the jail's rc, the names published and the log collector bound.

Each model rule is also checked against rex on its own: the failure rex would
meet without its fix."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rexcarcer import hostsetup, ipam
from rexcarcer.base.manifest import parse_location
from rexcarcer.base.source import Bases
from rexcarcer.base.update import update_base
from rexcarcer.config import Config, load_config
from rexcarcer.dns.hook import DnsHook
from rexcarcer.engine import build as builder
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import RuntimeBackendError
from rexcarcer.host import Host
from rexcarcer.logs.hook import LogHook
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.pki.hook import IdentityHook
from rexcarcer.platform import freebsd_host as fh
from rexcarcer.platform.base import SetupCommand, SetupFile
from rexcarcer.platform.freebsd import FreeBSDPlatform, RouteCommands, route_argv
from rexcarcer.progress import QuietProgress
from rexcarcer.rexfile.parser import parse
from rexcarcer.runtime import procfs
from rexcarcer.runtime.base import BuildNet, JailSpec, build_env, jail_env
from rexcarcer.runtime.freebsd import FreeBSDRuntime, build_jail_name
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage
from tests.freebsd_model import PKG_NO_TTY, FreeBSDHost, freebsd_base
from tests.unit.test_plan import comparable, is_record_copy

URL = "https://bases.example.com/freebsd/FreeBSD-14.1-RELEASE"
SUBNET = "198.51.100.0/24"
HOST_ADDRESS = "198.51.100.1"
PUBLIC = "203.0.113.0/24@vtnet0"
# DESIGN section 1, plus ENABLE for the daemons the jails run
PUBLIC_DOCS = f"""\
# public-docs.rex
BASE {URL}
PROVISION RUN pkg install -y nginx
PROVISION COPY ./public /usr/local/www/docs
PROVISION COPY nginx.conf /usr/local/etc/nginx/nginx.conf
ENV DOCS_ROOT=/usr/local/www/docs
ENABLE nginx
# Bind to a public IP of this host; A record goes into cluster DNS
HOSTNAME docs.example.com
IP 203.0.113.8/24
"""
INTERNAL_RENDERER = f"""\
# internal-renderer.rex
BASE {URL}
PROVISION RUN pkg install -y renderer
ENABLE renderer FLAGS --port 1234
# IP and hostname are assigned; SRV record goes into cluster DNS
SERVICE renderer PORT 1234
"""


@dataclass
class Bsd:
    model: FreeBSDHost
    host: Host
    eng: Engine
    ctx: Path  # where the .rex files and their COPY sources are

    @property
    def config(self) -> Config:
        return self.host.config

    def rexfile(self, name: str, text: str) -> Path:
        path = self.ctx / name
        path.write_text(text)
        return path


@pytest.fixture
def bsd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bsd]:
    # FreeBSD mounts no procfs: rex's own /proc reader finds nothing there
    monkeypatch.setattr(procfs, "PROC", tmp_path / "no-proc")
    fs = tmp_path / "fs"
    model = FreeBSDHost(fs)
    env = {
        "REX_RUNTIME": "freebsd",
        "REX_SUBNET": SUBNET,
        "REX_PUBLIC_IPS": PUBLIC,
        "REX_HOST": "bsd1",
        "REX_UNBOUND_CONTROL": str(tmp_path / "local_unbound.ctl"),
    }
    config = load_config(root=tmp_path / "state", environ=env)
    storage = FakeStorage(tmp_path / "zfs", config.dataset)
    platform = FreeBSDPlatform(model, config, fs_root=fs)
    host = Host(config, model, storage, platform, MemoryStore(), QuietProgress())
    storage.ensure_layout()
    mnt = storage.create("bases/FreeBSD-14.1-RELEASE")
    freebsd_base(mnt)
    storage.set_props(
        "bases/FreeBSD-14.1-RELEASE",
        {
            "version": "14.1-RELEASE-p5",
            "id": "base-14.1",
            "osrelease": "14.1-RELEASE-p5",
            "url": parse_location(URL).url,
            "complete": "1",
        },
    )
    storage.snapshot("bases/FreeBSD-14.1-RELEASE@14.1-RELEASE-p5")
    hooks = [DnsHook(model.dns), IdentityHook(), LogHook()]
    ctx = tmp_path / "ctx"
    (ctx / "public").mkdir(parents=True)
    (ctx / "public" / "index.html").write_text("<h1>docs</h1>\n")
    (ctx / "nginx.conf").write_text("events {}\n")
    # docs/freebsd.md step 4: the administrator's pf.conf hooks rex's anchors
    (fs / "etc" / "pf.conf").write_text(
        'nat-anchor "rexcarcer/*"\nrdr-anchor "rexcarcer/*"\nanchor "rexcarcer/*"\npass all\n'
    )
    model.run(["sysrc", "pf_enable=YES"])
    model.run(["service", "pf", "start"])
    yield Bsd(model, host, Engine(host, Bases(), hooks, policy=NetworkPolicy()), ctx)


def _setup(bsd: Bsd) -> str:
    return hostsetup.setup(bsd.host, start=True, global_args=[], backend=bsd.model.dns)


# -- rex host setup on a fresh host ---------------------------------------------------


def test_host_setup_makes_the_jail_interface_unbound_and_the_collector(bsd: Bsd) -> None:
    message = _setup(bsd)
    model = bsd.model
    # the interface: a free lo clone renamed rex0, with the host's address, now and at boot
    assert model.interfaces["rex0"] == [HOST_ADDRESS]
    assert model.rc["cloned_interfaces"] == "lo1"
    assert model.rc["ifconfig_lo1_name"] == "rex0"
    assert model.rc["ifconfig_rex0"] == f"inet {HOST_ADDRESS}/24"
    # local_unbound: enabled before setup, so setup ran and wrote the include line
    assert model.rc["local_unbound_enable"] == "YES"
    unbound_conf = (model.fs / "var/unbound/unbound.conf").read_text()
    assert "include: /var/unbound/conf.d/*.conf" in unbound_conf
    assert "local_unbound" in model.running and model.dns.up
    conf_d = (model.fs / "var/unbound/conf.d/rexcarcer.conf").read_text()
    assert f"interface: {HOST_ADDRESS}\n" in conf_d
    assert "access-control: 203.0.113.0/24 allow" in conf_d  # the public range
    # setup said what it does to the host's resolver, and that is what happened
    assert (model.fs / "etc/resolv.conf").read_text().endswith("nameserver 127.0.0.1\n")
    assert any(p.name.startswith("resolv.conf.") for p in (model.fs / "var/backups").iterdir())
    # the collector: rc.d script, enabled, bound to the host's address on rex0
    assert model.rc["rexcarcer_logs_enable"] == "YES"
    assert (HOST_ADDRESS, 514) in model.listeners
    assert f"jail logs collected by rsyslogd {model.listeners[(HOST_ADDRESS, 514)][1]}" in message
    assert "no procfs" not in message


def test_host_setup_again_changes_nothing_and_skips_lo_units_in_use(bsd: Bsd) -> None:
    bsd.model.interfaces["lo1"] = []  # Bastille's bastille0 before its rename, say
    bsd.model.rc["cloned_interfaces"] = "lo2"
    _setup(bsd)
    assert bsd.model.rc["cloned_interfaces"] == "lo2 lo3"  # += appends (sysrc(8))
    first = len(bsd.model.calls)
    _setup(bsd)
    again = [c for c in bsd.model.calls[first:] if c[0] in ("ifconfig", "sysrc", "service")]
    changes = [
        c
        for c in again
        if c[1:2] not in (("-l",), ("-a",), ("-n",), ("rex0",))
        and c[-1] not in ("status", "configtest")
    ]
    # the collector is restarted (its table may have changed); nothing else
    assert changes == [("service", "rexcarcer_logs", "restart")]


def test_dry_run_prints_exactly_what_setup_then_does(bsd: Bsd) -> None:
    steps = hostsetup.plan(bsd.host, [])
    probes = len(bsd.model.calls)
    _setup(bsd)
    ran = [
        c
        for c in bsd.model.calls[probes:]
        if c[0] not in ("ifconfig", "sysrc", "service")
        or (c[1:] not in (("-l",), ("rex0",), ("-a",)) and c[-1] != "status")
    ]
    planned = [s.argv for s in steps if isinstance(s, SetupCommand)]
    assert ran[: len(planned)] == planned  # then the collector's readiness probe
    for step in steps:
        if isinstance(step, SetupFile) and step.content is not None:
            assert step.path.read_text() == step.content
    actions = hostsetup.actions(steps)
    assert [a.commands[0] for a in actions if a.commands] == planned
    assert {f.path for a in actions for f in a.files} >= {
        str(bsd.model.fs / "var/unbound/conf.d/rexcarcer.conf"),
        str(bsd.model.fs / "usr/local/etc/rc.d/rexcarcer_logs"),
    }


# -- the two jails ------------------------------------------------------------------------


def test_design_examples_come_up_with_nginx_enabled_names_published_logs_bound(bsd: Bsd) -> None:
    _setup(bsd)
    docs = parse(PUBLIC_DOCS, path=bsd.rexfile("public-docs.rex", PUBLIC_DOCS))
    jails.up(bsd.eng, docs, "public-docs")
    renderer = parse(
        INTERNAL_RENDERER, path=bsd.rexfile("internal-renderer.rex", INTERNAL_RENDERER)
    )
    jails.up(bsd.eng, renderer, "internal-renderer")
    model = bsd.model
    web = model.jails["public-docs"]
    # the public IP went on its declared interface, as a host route
    assert web.aliases == [("vtnet0", "203.0.113.8")]
    assert (
        "203.0.113.8" in model.interfaces["vtnet0"]
        and "203.0.113.8" not in model.interfaces["rex0"]
    )
    # nginx: installed by its build step, enabled by ENABLE, started by the jail's rc with ENV
    assert web.daemons["nginx"]["nginx_enable"] == "YES"
    assert web.daemons["nginx"]["DOCS_ROOT"] == "/usr/local/www/docs"
    assert (web.path / "usr/local/sbin/nginx").exists()
    assert (web.path / "usr/local/www/docs/index.html").read_text() == "<h1>docs</h1>\n"
    svc = model.jails["internal-renderer"]
    assert svc.aliases == [("rex0", "198.51.100.2")]  # the build's address was given back
    assert svc.daemons["renderer"]["renderer_flags"] == "--port 1234"
    # names published through local_unbound
    served = {(r.name, r.rtype, r.data) for r in model.dns.data}
    assert ("docs.example.com.", "A", "203.0.113.8") in served
    assert ("public-docs.jail.rex.internal.", "A", "203.0.113.8") in served
    assert ("renderer.svc.rex.internal.", "A", "198.51.100.2") in served
    assert (
        "_renderer._tcp.svc.rex.internal.",
        "SRV",
        "10 100 1234 internal-renderer.jail.rex.internal.",
    ) in served
    # logs: both jails forward to the collector bound on rex0, which files them by address
    assert (HOST_ADDRESS, 514) in model.listeners
    for jail in (web, svc):
        assert "@198.51.100.1:514" in (jail.path / "etc/syslog.d/rexcarcer.conf").read_text()
        assert (jail.path / "etc/rc.conf.d/syslogd").read_text().endswith('syslogd_flags="-s"\n')
    table = json.loads((bsd.config.root / "rsyslog" / "jails.json").read_text())
    assert {r["index"]: r["value"] for r in table["table"]} == {
        "203.0.113.8": "public-docs",
        "198.51.100.2": "internal-renderer",
    }
    # no /etc/hostname on FreeBSD; the cluster CA is in the jail's trust store
    assert not (web.path / "etc/hostname").exists()
    trusted = list((web.path / "etc/ssl/certs").glob("*.0"))
    assert len(trusted) == 1 and trusted[0].read_bytes().startswith(b"Certificate:")
    crt = (web.path / "usr/local/share/certs/rexcarcer-cluster.crt").read_bytes()
    assert crt == trusted[0].read_bytes()


def test_the_build_jail_has_a_subnet_address_and_pkg_gets_assume_always_yes(bsd: Bsd) -> None:
    _setup(bsd)
    rexfile = parse(
        f"BASE {URL}\nPROVISION RUN pkg install nginx\n", path=bsd.rexfile("nox.rex", "")
    )
    jails.up(bsd.eng, rexfile, "nox")  # `pkg install` without -y
    jexec = [c for c in bsd.model.calls if c[0] == "jexec"]
    assert len(jexec) == 1 and "ASSUME_ALWAYS_YES=yes" in jexec[0]
    assert "PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin" in jexec[0]
    confs = [c for c in bsd.model.calls if c[:2] == ("jail", "-f") and "rexbuild-" in c[-1]]
    assert [c[3] for c in confs] == ["-c", "-r"]
    assert not list((bsd.model.fs / "var/run/rexcarcer").iterdir())  # its file is gone


# -- each rule of the model against rex ------------------------------------------------


def test_rule_jail_c_fails_without_the_interface(bsd: Bsd) -> None:
    # before `rex host setup` there is no rex0 (research item 1)
    runtime = bsd.host.runtime
    assert isinstance(runtime, FreeBSDRuntime)
    spec = JailSpec(
        "web",
        bsd.host.storage.mountpoint("bases/FreeBSD-14.1-RELEASE"),
        "web",
        ipaddress.ip_interface("198.51.100.9/24"),
        "rex0",
    )
    with pytest.raises(RuntimeBackendError, match="interface rex0 does not exist"):
        runtime.start(spec)
    assert bsd.model.jails == {} and "rex0" not in bsd.model.interfaces


def test_rule_service_setup_is_a_no_op_while_disabled(bsd: Bsd) -> None:
    # the order rex used to run: setup, enable, configtest -> no unbound.conf
    model = bsd.model
    done = model.run(["service", "local_unbound", "setup"])
    assert done.ok and "Cannot 'setup' local_unbound" in done.stdout
    assert not (model.fs / "var/unbound/unbound.conf").exists()
    model.run(["sysrc", "local_unbound_enable=YES"])
    assert not model.run(["service", "local_unbound", "configtest"], check=False).ok
    steps = fh.unbound_steps(
        hostsetup.inputs(bsd.host, []), bsd.host.platform.fresh_facts(), model.fs
    )
    argvs = [s.argv for s in steps if isinstance(s, SetupCommand)]
    assert argvs.index(("sysrc", "local_unbound_enable=YES")) < argvs.index(
        ("service", "local_unbound", "setup")
    )


def test_rule_pkg_refuses_without_a_tty_or_assume_always_yes(bsd: Bsd) -> None:
    _setup(bsd)
    root = bsd.host.storage.mountpoint("bases/FreeBSD-14.1-RELEASE")
    runtime = bsd.host.runtime
    net = BuildNet(
        "_build-x",
        ipaddress.ip_interface("198.51.100.9/24"),
        ipaddress.ip_address(HOST_ADDRESS),
        "rex0",
    )
    without = runtime.build_run(root, "pkg install -y nginx", env=jail_env(()), network=net)
    assert without.returncode == 1 and PKG_NO_TTY in without.stdout
    with_it = runtime.build_run(root, "pkg install -y nginx", env=build_env(()), network=net)
    assert with_it.returncode == 0 and (root / "usr/local/sbin/nginx").exists()
    # and the build jail is gone each time, its status kept (not jail(8)'s 1)
    assert build_jail_name(root) not in bsd.model.jails
    nosh = runtime.build_run(root, "pkg install -y nginx", env={"PATH": "/bin"}, network=net)
    assert nosh.returncode == 127  # pkg is /usr/sbin/pkg: PATH must have /usr/sbin
    # without an address the step has no network (ip4 "disable"), so no package
    offline = runtime.build_run(root, "pkg install -y curl", env=build_env(()))
    assert offline.returncode == 1 and "No address record" in offline.stdout


def test_rule_ipv6_routes_need_inet6(bsd: Bsd) -> None:
    net = ipaddress.ip_network("2001:db8:66::/64")
    via = ipaddress.ip_address("2001:db8::2")
    bare = ["route", "-n", "add", "-net", str(net), str(via)]
    assert not bsd.model.run(bare, check=False).ok  # route.c getaddr(): AF_INET by default
    RouteCommands(bsd.model).add(net, via)
    assert bsd.model.calls[-1] == tuple(route_argv("add", net, via))
    assert bsd.model.routes == {str(net): str(via)}
    RouteCommands(bsd.model).add(
        ipaddress.ip_network("203.0.113.64/26"), ipaddress.ip_address("198.51.100.2")
    )
    assert bsd.model.calls[-1][3] == "-inet"


# -- rex base update and rex doctor ------------------------------------------------------


def test_base_update_snapshots_the_next_version_and_keeps_jails_on_theirs(bsd: Bsd) -> None:
    _setup(bsd)
    docs = parse(PUBLIC_DOCS, path=bsd.rexfile("public-docs.rex", PUBLIC_DOCS))
    jails.up(bsd.eng, docs, "public-docs")
    info, changed = update_base(bsd.host, "FreeBSD-14.1-RELEASE")
    assert changed and info.version == "14.1-RELEASE-p6"
    # what `rex base update -o json` prints for it
    from rexcarcer.cli.base_cmds import update_data
    from tests.schemas import validate

    validate("base-update", update_data(info, changed))
    assert info.props["osrelease"] == "14.1-RELEASE-p6"
    assert info.props["lineage"] == "base-14.1" and info.props["id"] != "base-14.1"
    storage = bsd.host.storage
    assert storage.snapshots("bases/FreeBSD-14.1-RELEASE") == [
        "bases/FreeBSD-14.1-RELEASE@14.1-RELEASE-p5",
        "bases/FreeBSD-14.1-RELEASE@14.1-RELEASE-p6",
    ]
    assert [d.name for d in storage.datasets("bases")] == ["bases/FreeBSD-14.1-RELEASE"]
    update = next(c for c in bsd.model.calls if c[:2] == ("env", "PAGER=cat"))
    assert update[update.index("--currently-running") + 1] == "14.1-RELEASE-p5"
    conf = (bsd.config.root / "freebsd-update.conf").read_text()
    assert "Components world\n" in conf and "KeyPrint " in conf
    # the running jail is untouched; a new jail starts from the new version
    assert "public-docs" in bsd.model.jails
    assert jails.record(bsd.eng, "public-docs").image.startswith("images/")  # type: ignore[union-attr]


def test_doctor_checks_the_freebsd_host(bsd: Bsd) -> None:
    before = {c.name: c.ok for c in bsd.host.platform.doctor_checks()}
    assert before == {
        "jail interface": False,
        "devfs": True,
        "local_unbound": False,
        "pf": True,  # the fixture did docs/freebsd.md step 4 (pf.conf hooks, pf started)
        "racct": False,
        "clock sync": False,  # ntpd is off on a fresh install
    }
    _setup(bsd)
    after = {c.name: c.ok for c in bsd.host.platform.doctor_checks()}
    assert after["jail interface"] and after["local_unbound"]
    time = next(c for c in bsd.host.platform.doctor_checks() if c.name == "clock sync")
    assert "ntpd_enable=YES" in time.detail
    bsd.model.clock_synced = True  # ntpd has disciplined the clock
    assert {c.name: c.ok for c in bsd.host.platform.doctor_checks()}["clock sync"]


# -- what `rex up` runs, counted (docs/freebsd.md compares it with Bastille) ------------


def up_commands(bsd: Bsd) -> Counter[str]:
    _setup(bsd)
    first = len(bsd.model.calls)
    zfs_first = len(bsd.host.storage.calls)  # type: ignore[attr-defined]
    docs = parse(PUBLIC_DOCS, path=bsd.rexfile("public-docs.rex", PUBLIC_DOCS))
    jails.up(bsd.eng, docs, "public-docs")
    counts = Counter(c[0] for c in bsd.model.calls[first:])
    counts["zfs"] = len(bsd.host.storage.calls[zfs_first:])  # type: ignore[attr-defined]
    return counts


def test_rex_up_of_public_docs_runs_few_commands(bsd: Bsd) -> None:
    counts = up_commands(bsd)
    # zfs: per step clone, snapshot, set complete (3 steps), then the jail's clone,
    # which carries its ready record (rexcarcer:record): nothing is set after the start
    assert counts["zfs"] == 10
    # jail: build jail -c and -r for the one RUN step, then the jail's -c
    assert counts["jail"] == 3 and counts["jexec"] == 1
    for none in ("sysrc", "service", "route"):
        assert counts[none] == 0, none
    # the network policy reads the host's addresses (`ifconfig -a`, a read) for
    # admission and for each guard load (before the RUN step, before the start);
    # nothing rex runs adds or removes an address: jail(8) does (ip4.addr)
    ifconfigs = [c for c in bsd.model.calls if c[0] == "ifconfig"]
    assert counts["ifconfig"] == 3 and all(c == ("ifconfig", "-a") for c in ifconfigs[-3:])
    # the guard, twice: its anchor loaded, the anchors listed, the hooks read
    # (pfctl -s nat, -s rules)
    assert counts["pfctl"] == 8
    # rctl -r after the build jail: rules name a jail and outlive it (rctl(8))
    assert counts["rctl"] <= 1
    assert set(counts) <= {"zfs", "jail", "jexec", "jls", "openssl", "ifconfig", "pfctl", "rctl"}


def test_the_plan_of_public_docs_on_freebsd_shows_every_command_and_file(bsd: Bsd) -> None:
    _setup(bsd)
    docs = parse(PUBLIC_DOCS, path=bsd.rexfile("public-docs.rex", PUBLIC_DOCS))
    plan = plan_up(bsd.eng, docs, "public-docs")
    first = len(bsd.model.calls)
    zfs_first = len(bsd.host.storage.calls)  # type: ignore[attr-defined]
    jails.up(bsd.eng, docs, "public-docs")
    ran = [list(c) for c in bsd.model.calls[first:] if c[0] in ("jail", "jexec")]
    loads = [list(c) for c in bsd.model.calls[first:] if c[0] == "pfctl" and "-f" in c]
    zfs = [
        c
        for c in bsd.host.storage.calls[zfs_first:]  # type: ignore[attr-defined]
        if not is_record_copy(c)
    ]  # bookkeeping: named by the plan, not listed
    planned = [list(c) for a in plan for c in a.commands]
    # the same commands in the same order (zfs and jail(8) are two lists here)
    assert comparable([c for c in planned if c[0] == "zfs"]) == comparable([list(c) for c in zfs])
    assert [c for c in planned if c[0] in ("jail", "jexec")] == ran
    # the guard is shown once, before the first step that runs; rex up loads it
    # again before the start (the same loads: nothing changed in between)
    guard = [c for c in planned if c[0] == "pfctl"]
    assert guard and loads == guard + guard
    order = [c[0] for c in planned]
    assert order.index("pfctl") < order.index("jail")
    files = {f.path: f.content for a in plan for f in a.files}
    root = bsd.host.storage.mountpoint("jails") / "public-docs"
    conf = bsd.model.fs / "etc/jail.conf.d/public-docs.conf"
    assert files[str(conf)] == conf.read_text()
    assert files[f"{root}/etc/rc.conf.d/nginx"] == (root / "etc/rc.conf.d/nginx").read_text()
    assert files[f"{root}/etc/rexcarcer/env"] == "DOCS_ROOT='/usr/local/www/docs'\n"


def test_a_killed_builds_jail_and_address_are_removed_by_the_next_sweep(bsd: Bsd) -> None:
    # A run killed mid-step leaves its build jail running on its build address
    # (and the IPAM lease). The next build's sweep removes that jail with its own
    # file: jail -f FILE -r also removes the alias (usr.sbin/jail/jail.c
    # stopcommands end with IP__IP6_IFADDR, IP__IP4_IFADDR), so the address is
    # off rex0 before IPAM gives it out again.
    _setup(bsd)
    host = bsd.host
    runtime = host.runtime
    assert isinstance(runtime, FreeBSDRuntime)
    owner = "build-deadbeef"
    address = ipam.allocate(host.store, bsd.config.subnet, owner, host="bsd1", build=True)
    root = host.storage.mountpoint("bases/FreeBSD-14.1-RELEASE")
    net = builder.build_net(bsd.config, owner, address)
    (conf,) = runtime.build_files(root, net)
    conf.path.parent.mkdir(parents=True, exist_ok=True)
    conf.path.write_text(conf.content)
    create = runtime.build_commands(root, "sleep 1000", build_env(()), net)[0]
    bsd.model.run(create)
    assert str(address.ip) in bsd.model.interfaces["rex0"]
    builder.sweep_incomplete(host)
    assert build_jail_name(root) not in bsd.model.jails
    assert str(address.ip) not in bsd.model.interfaces["rex0"]
    assert not conf.path.exists()
    assert ipam.owner(host.store, address.ip) is None
