"""The network policy on the in-memory drivers: which IPs and HOSTNAMEs a jail
may have, the guard ruleset a host computes, and where the engine applies it
(jail start, build steps, `rex plan`). tests/integration/test_hostile.py runs
the same policy for real, against jails and build steps that try to get out."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from rexcarcer import ipam
from rexcarcer.config import TESTING_ENV, Config, load_config
from rexcarcer.engine import build as builder
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import ConfigError
from rexcarcer.firewall.fake import FakeFirewall
from rexcarcer.firewall.rules import Guard
from rexcarcer.host import Host
from rexcarcer.netpolicy import AddressRefused, HostnameRefused
from rexcarcer.netpolicy.admit import address_problem
from rexcarcer.netpolicy.facts import Endpoint, NetFacts, Peer, endpoint
from rexcarcer.netpolicy.guard import guard_for, unbound_tcp_port
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.progress import QuietProgress
from rexcarcer.rexfile.ast import Base, Proto, Rexfile, Run
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.base import BuildNet
from rexcarcer.state.base import create_json
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage
from tests.unit.fakes import fake_engine, fake_runtime

ip = ipaddress.ip_address
net = ipaddress.ip_network

pytestmark = pytest.mark.unit


def _config(tmp_path: Path, **env: str) -> Config:
    return load_config(root=tmp_path / "state", environ={
        "REX_SUBNET": "203.0.113.0/24", **TESTING_ENV, "REX_HOST": "h1", **env})  # fmt: skip


FACTS = NetFacts(
    own=(ip("127.0.0.1"), ip("203.0.113.1"), ip("198.51.100.11"), ip("::1")),
    etcd=(Endpoint("http://198.51.100.5:2379", (ip("198.51.100.5"),), 2379),),
    peers=(Peer("h2", ip("198.51.100.12"), net("198.51.100.64/26")),),
    held=((ip("198.51.100.11"), "alias"),),
)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.5", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("240.0.0.1", "reserved"),
        ("::ffff:198.51.100.5", "IPv4-mapped"),
        ("203.0.113.1", "this host's own address in the jail subnet"),
        ("198.51.100.5", "etcd endpoint http://198.51.100.5:2379"),
        ("198.51.100.12", "cluster host h2"),
        ("198.51.100.70", "h2's jail subnet 198.51.100.64/26"),
        ("203.0.113.0", "network address of the jail subnet"),
        ("203.0.113.255", "broadcast address of the jail subnet"),
        ("198.51.100.16", "network address of the public range 198.51.100.16/28"),
        ("198.51.100.40", "outside this host's jail subnet 203.0.113.0/24 and every public"),
    ],
)
def test_addresses_a_jail_may_not_have(tmp_path: Path, address: str, why: str) -> None:
    config = _config(tmp_path, REX_PUBLIC_IPS="198.51.100.16/28@em0")
    problem = address_problem(ip(address), subnet=config.subnet, gateway=config.host_address,
                              public=config.public_ips, facts=FACTS)  # fmt: skip
    assert problem is not None and why in problem, problem


def test_addresses_a_jail_may_have(tmp_path: Path) -> None:
    config = _config(tmp_path, REX_PUBLIC_IPS="198.51.100.16/28@em0")
    for ok in ("203.0.113.2", "203.0.113.254", "198.51.100.17", "198.51.100.30"):
        assert address_problem(ip(ok), subnet=config.subnet, gateway=config.host_address,
                               public=config.public_ips, facts=FACTS) is None, ok  # fmt: skip
    # an address a jail holds is no longer "the host's" (FreeBSD aliases): IPAM decides
    facts = NetFacts(own=(ip("203.0.113.9"),), held=((ip("203.0.113.9"), "web"),))
    assert address_problem(ip("203.0.113.9"), subnet=config.subnet, gateway=config.host_address,
                           public=(), facts=facts) is None  # fmt: skip
    mine = NetFacts(own=(ip("203.0.113.9"),))
    assert "an address of this host" in str(address_problem(
        ip("203.0.113.9"), subnet=config.subnet, gateway=config.host_address, public=(),
        facts=mine))  # fmt: skip


def test_an_etcd_endpoint_by_name_is_resolved_and_by_literal_kept() -> None:
    assert endpoint("https://[2001:db8::5]:2479") == Endpoint(
        "https://[2001:db8::5]:2479", (ip("2001:db8::5"),), 2479)  # fmt: skip
    assert endpoint("http://localhost").addresses and endpoint("http://localhost").port == 2379
    assert endpoint("http://no-such-host.invalid:2379").addresses == ()


# -- the engine refuses before anything changes -------------------------------------------


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return fake_engine(tmp_path)


def _rexfile(tmp_path: Path, **kw: object) -> Rexfile:
    return Rexfile(base=Base("bb"), steps=(Run("true"),), path=tmp_path / "evil.rex",
                   **kw)  # type: ignore[arg-type]  # fmt: skip


def _nothing_changed(eng: Engine) -> None:
    assert eng.host.store.list("") == []
    assert not eng.host.storage.exists("jails/evil")
    assert eng.host.storage.datasets("images") == []
    assert fake_runtime(eng.host).builds == []
    platform = eng.host.platform
    assert isinstance(platform, FakePlatform) and platform.firewall.loads == 0


@pytest.mark.parametrize(
    ("address", "why"),
    [("203.0.113.1/24", "own address"), ("127.0.0.2/8", "loopback"),
     ("198.51.100.7/24", "outside"), ("198.51.100.11/24", "an address of this host")],
)  # fmt: skip
def test_up_and_plan_refuse_an_ip_and_create_nothing(
    eng: Engine, tmp_path: Path, address: str, why: str
) -> None:
    platform = eng.host.platform
    assert isinstance(platform, FakePlatform)
    platform.addresses.append(ip("198.51.100.11"))
    evil = _rexfile(tmp_path, ip=ipaddress.ip_interface(address))
    for attempt in (lambda: jails.up(eng, evil, "evil"), lambda: plan_up(eng, evil, "evil")):
        with pytest.raises(AddressRefused) as err:
            attempt()
        assert why in err.value.message and f"IP {address}" in err.value.message
        assert str(tmp_path / "evil.rex") in err.value.message
        assert err.value.exit_code == 46
    _nothing_changed(eng)


@pytest.mark.parametrize(
    ("hostname", "why"),
    [("h1.host.rex.internal", "host.rex.internal"), ("host.rex.internal", "host.rex.internal"),
     ("api.svc.rex.internal", "svc.rex.internal"), ("other.jail.rex.internal", "jail.rex.internal"),
     ("x.evil.jail.rex.internal", "only evil.jail.rex.internal")],
)  # fmt: skip
def test_up_and_plan_refuse_a_hostname_and_create_nothing(
    eng: Engine, tmp_path: Path, hostname: str, why: str
) -> None:
    evil = _rexfile(tmp_path, hostname=hostname)
    for attempt in (lambda: jails.up(eng, evil, "evil"), lambda: plan_up(eng, evil, "evil")):
        with pytest.raises(HostnameRefused, match=why) as err:
            attempt()
        assert err.value.exit_code == 47 and hostname in err.value.message
    _nothing_changed(eng)


def test_a_jail_may_name_itself_and_names_outside_rex_s_parts(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, _rexfile(tmp_path, hostname="evil.jail.rex.internal"), "evil")
    jails.up(eng, _rexfile(tmp_path, hostname="docs.example.com"), "docs")


def test_another_host_s_address_from_the_store_is_refused(eng: Engine, tmp_path: Path) -> None:
    store = eng.host.store
    create_json(store, "hosts/h2", {"name": "h2", "address": "198.51.100.12",
                                    "subnet": "198.51.100.64/26"})  # fmt: skip
    for address, why in (("198.51.100.12/24", "cluster host h2"),
                         ("198.51.100.70/26", "h2's jail subnet")):  # fmt: skip
        with pytest.raises(AddressRefused, match=why):
            jails.up(eng, _rexfile(tmp_path, ip=ipaddress.ip_interface(address)), "evil")


# -- the guard ------------------------------------------------------------------------------


def test_the_guard_closes_control_ports_and_the_cluster(tmp_path: Path) -> None:
    config = _config(tmp_path, REX_PUBLIC_IPS="198.51.100.16/28@em0", REX_API_PORT="9443")
    facts = NetFacts(
        own=(ip("203.0.113.1"),),
        etcd=(Endpoint("https://198.51.100.5:23790", (ip("198.51.100.5"),), 23790),),
        peers=(Peer("h2", ip("198.51.100.12"), net("198.51.100.64/26")),),
        api_ports=(7543,),
    )
    guard = guard_for(config, facts, unbound=(8954,))
    assert guard == Guard(
        net("203.0.113.0/24"), "rex0",
        ports=tuple((Proto.TCP, p) for p in (2379, 2380, 7543, 8953, 8954, 9443, 23790)),
        addresses=(ip("198.51.100.5"), ip("198.51.100.12"), ip("198.51.100.65")),
        sources=(net("198.51.100.16/28"), net("198.51.100.64/26")),
    )  # fmt: skip


def test_a_public_range_holding_a_cluster_host_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, REX_PUBLIC_IPS="198.51.100.0/25@em0")
    facts = NetFacts(own=(), peers=(Peer("h2", ip("198.51.100.12"), None),))
    with pytest.raises(ConfigError, match=r"198\.51\.100\.12 of cluster host h2"):
        guard_for(config, facts)


@pytest.mark.parametrize(
    ("conf", "port"),
    [
        ("remote-control:\n    control-enable: yes\n", 8953),
        ("remote-control:\n  control-enable: yes\n  control-interface: 127.0.0.1\n"
         "  control-port: 8999\n", 8999),
        ('remote-control:\n  control-enable: "yes"\n  control-interface: /run/u.sock\n', None),
        ("remote-control:\n  control-enable: no\n  control-port: 8999\n", None),
        ("server:\n  interface: 127.0.0.1\n", None),
    ],
)  # fmt: skip
def test_unbound_s_control_port_when_it_is_tcp(conf: str, port: int | None) -> None:
    assert unbound_tcp_port(conf) == port


def test_a_jail_start_loads_the_guard_once(eng: Engine, tmp_path: Path) -> None:
    platform = eng.host.platform
    assert isinstance(platform, FakePlatform) and isinstance(platform.firewall, FakeFirewall)
    jails.up(eng, _rexfile(tmp_path), "a")
    assert platform.firewall.loads == 1
    guard = platform.firewall.ruleset.guard
    assert guard is not None and (Proto.TCP, 7443) in guard.ports
    jails.up(eng, _rexfile(tmp_path), "b")  # the same rules: not loaded again
    assert platform.firewall.loads == 1
    platform.firewall.clear()  # flushed by someone: a start loads them again
    jails.restart(eng, "a")
    assert platform.firewall.loads == 2


def test_a_firewall_that_refuses_keeps_the_jail_from_starting(eng: Engine, tmp_path: Path) -> None:
    platform = eng.host.platform
    assert isinstance(platform, FakePlatform)
    platform.firewall.fail_with = "nft: no nf_tables"
    with pytest.raises(Exception, match="no nf_tables"):
        jails.up(eng, Rexfile(base=Base("bb"), path=tmp_path / "a.rex"), "a")
    assert fake_runtime(eng.host).running == {}
    assert eng.host.store.list("") == []


# -- build steps are jails -----------------------------------------------------------------


def test_a_build_step_gets_a_build_address_resolv_conf_and_the_guard(
    eng: Engine, tmp_path: Path
) -> None:
    seen: list[tuple[dict[str, str], str]] = []
    runtime = fake_runtime(eng.host)

    def step(command: str) -> int:
        # while the step runs: its address is held, by its build name
        seen.append((ipam.taken(eng.host.store), command))
        return 0

    runtime.handler = step
    jails.up(eng, _rexfile(tmp_path), "app")
    [net_] = runtime.networks
    assert isinstance(net_, BuildNet)
    assert net_.name.startswith("build-") and len(net_.name) == len("build-") + 8
    assert net_.address == ipaddress.ip_interface("203.0.113.2/24")
    assert (net_.gateway, net_.interface, net_.routes) == (ip("203.0.113.1"), "rex0", ())
    assert seen[0][0] == {"203.0.113.2": net_.name}
    # released after the step: the jail gets the same lowest free address
    assert ipam.taken(eng.host.store) == {"203.0.113.2": "app"}
    image = eng.host.storage.mountpoint(jails.record(eng, "app").image.split("@")[0])  # type: ignore[union-attr]
    assert (image / "etc/resolv.conf").read_text() == (
        "# generated by rex\nnameserver 203.0.113.1\nsearch svc.rex.internal jail.rex.internal\n"
    )
    platform = eng.host.platform
    assert isinstance(platform, FakePlatform) and platform.firewall.loads == 1


def test_a_failing_step_releases_its_build_address(eng: Engine, tmp_path: Path) -> None:
    fake_runtime(eng.host).handler = lambda command: 3
    with pytest.raises(Exception, match="exit status 3"):
        jails.up(eng, _rexfile(tmp_path), "app")
    assert ipam.taken(eng.host.store) == {}


def test_a_killed_run_s_build_address_is_swept(eng: Engine, tmp_path: Path) -> None:
    store = eng.host.store
    left = ipam.allocate(store, eng.host.config.subnet, "build-deadbeef", host="h1", build=True)
    other = ipam.allocate(store, eng.host.config.subnet, "build-0ther0ne", host="h2", build=True)
    jail = ipam.allocate(store, eng.host.config.subnet, "build-jailname", host="h1")
    with eng.host.lock("build-cafecafe"):  # a build of this host still running
        ipam.allocate(store, eng.host.config.subnet, "build-cafecafe", host="h1", build=True)
        builder.sweep_incomplete(eng.host)
    taken = ipam.taken(store)
    assert str(left.ip) not in taken  # swept, with what the runtime had set up for it
    assert [n.name for n in fake_runtime(eng.host).cleaned] == ["build-deadbeef"]
    # another host's build, a jail that happens to be called build-*, a live build: kept
    assert taken[str(other.ip)] == "build-0ther0ne" and taken[str(jail.ip)] == "build-jailname"
    assert "build-cafecafe" in taken.values()
    ipam.release_all(store, "build-cafecafe")  # a jail's release never frees a build's
    assert "build-cafecafe" in ipam.taken(store).values()


def test_the_plan_loads_the_guard_before_the_first_step_that_runs(
    eng: Engine, tmp_path: Path
) -> None:
    plan = plan_up(eng, _rexfile(tmp_path), "app")
    assert [a.kind for a in plan] == ["firewall", "build", "address", "clone", "files", "start"]
    assert plan[0].commands == (("fake-firewall", "apply"),)
    build = plan[1].commands
    assert build[1][0] == "fake-net" and build[1][2] == "203.0.113.2/24"
    jails.up(eng, _rexfile(tmp_path), "app")
    jails.stop(eng, "app")
    assert [a.kind for a in plan_up(eng, _rexfile(tmp_path), "app")] == ["start"]


# -- in a cluster ---------------------------------------------------------------------------


def _clustered(tmp_path: Path, store: MemoryStore) -> Host:
    config = load_config(root=tmp_path / "h1", environ={
        "REX_SUBNET": "203.0.113.0/26", **TESTING_ENV, "REX_HOST": "h1",
        "REX_ETCD": "http://198.51.100.1:2379,http://198.51.100.2:23790"})  # fmt: skip
    runner = ScriptedRunner()
    return Host(config, runner, FakeStorage(tmp_path / "zfs"), FakePlatform(runner, config),
                store, QuietProgress())  # fmt: skip


def _join(store: MemoryStore, name: str, address: str, subnet: str) -> None:
    net_ = ipaddress.ip_network(subnet)
    create_json(store, f"hosts/{name}", {"name": name, "address": address, "subnet": subnet})
    create_json(store, f"subnets/{net_.network_address}_{net_.prefixlen}", {"host": name})


def test_in_a_cluster_the_guard_follows_the_hosts_and_the_agent(tmp_path: Path) -> None:
    store = MemoryStore()
    _join(store, "h1", "198.51.100.11", "203.0.113.0/26")
    _join(store, "h2", "198.51.100.12", "203.0.113.64/26")
    create_json(store, "hosts/h1/alive", {"since": 1, "api": "https://198.51.100.11:9443"})
    host = _clustered(tmp_path, store)
    policy = NetworkPolicy()
    policy.guard(host)
    firewall = host.platform.firewall
    assert isinstance(firewall, FakeFirewall) and firewall.ruleset.guard is not None
    guard = firewall.ruleset.guard
    assert guard.addresses == (ip("198.51.100.1"), ip("198.51.100.2"), ip("198.51.100.12"),
                               ip("203.0.113.65"))  # fmt: skip
    assert guard.sources == (net("203.0.113.64/26"),)
    assert {p for _, p in guard.ports} >= {7443, 9443, 2379, 2380, 23790, 8953}
    assert policy.guard_commands(host) == []
    _join(store, "h3", "198.51.100.13", "203.0.113.128/26")  # a host joins: the next tick
    assert policy.guard_commands(host) == [["fake-firewall", "apply"]]
    policy.guard(host)
    assert firewall.loads == 2 and ip("198.51.100.13") in firewall.ruleset.guard.addresses  # type: ignore[union-attr]


def test_the_agent_s_tick_loads_the_guard_and_survives_a_refusal(tmp_path: Path) -> None:
    from rexcarcer.agent.cluster import Agent
    from rexcarcer.firewall import FirewallError

    calls: list[str] = []

    def firewall() -> None:
        calls.append("guard")
        raise FirewallError("nft refused")

    agent = Agent("h1", MemoryStore(), None, firewall=firewall)  # type: ignore[arg-type]
    agent.reconcile()  # logged, not raised: DNS, routes and jails go on
    agent.reconcile()
    assert calls == ["guard", "guard"]
