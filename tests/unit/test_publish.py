"""PUBLISH and egress NAT on the in-memory drivers: the directive, the
admission before anything changes, the ruleset while a jail runs, the hook
that loads and removes a jail's ports, doctor. The same paths run for real in
tests/integration/test_publish.py."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from rexcarcer.base.source import Bases
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.doctor import _firewall
from rexcarcer.engine import jails, lifecycle
from rexcarcer.engine.base import Engine
from rexcarcer.errors import ConfigError, RexfileError
from rexcarcer.firewall.fake import FakeFirewall
from rexcarcer.firewall.rules import Masquerade
from rexcarcer.host import Host
from rexcarcer.model.jail import JailInfo, JailRecord, PublishEntry
from rexcarcer.netpolicy import HooksMissing, PortRefused, PortTaken, PublishAddressRefused
from rexcarcer.netpolicy.hook import PublishHook, default_policy, firewall_setup, reapply
from rexcarcer.netpolicy.publish import masquerade_for
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.rexfile.ast import Proto
from rexcarcer.rexfile.parser import parse
from tests.unit.fakes import fake_host

pytestmark = pytest.mark.unit

ip = ipaddress.ip_address


def _engine(tmp_path: Path, **env: str) -> Engine:
    host = fake_host(tmp_path)
    if env:
        config = load_config(root=tmp_path / "state", environ={
            "REX_SUBNET": "203.0.113.0/24", **TESTING_ENV, "REX_HOST": "h1", **env})  # fmt: skip
        host = dataclasses.replace(host, config=config)
    return Engine(host, Bases(), [PublishHook()], policy=default_policy())


def _rex(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.rex"
    path.write_text("BASE bb\n" + text)
    return path


def _fw(host: Host) -> FakeFirewall:
    platform = host.platform
    assert isinstance(platform, FakePlatform)
    return platform.firewall


def _up(eng: Engine, tmp_path: Path, name: str, text: str) -> JailInfo:
    from rexcarcer.rexfile.parser import load

    return jails.up(eng, load(_rex(tmp_path, name, text)), name)


# -- the directive ---------------------------------------------------------------


def test_publish_lines_parse_into_the_ast() -> None:
    rf = parse("BASE x\nPUBLISH 8080:80\npublish 5353:53/UDP on 198.51.100.7\n"
               "PUBLISH 8443:443/tcp ON 2001:db8::7\n")  # fmt: skip
    assert [(p.host_port, p.port, p.proto, p.on) for p in rf.publish] == [
        (8080, 80, Proto.TCP, None),
        (5353, 53, Proto.UDP, ip("198.51.100.7")),
        (8443, 443, Proto.TCP, ip("2001:db8::7")),
    ]
    assert rf.canonical()["publish"] == ["8080:80/tcp", "5353:53/udp ON 198.51.100.7",
                                         "8443:443/tcp ON 2001:db8::7"]  # fmt: skip
    # a file without PUBLISH keeps the digest it had before PUBLISH existed
    assert "publish" not in parse("BASE x\n").canonical()


@pytest.mark.parametrize(
    ("line", "where", "message"),
    [
        ("PUBLISH", "2:8", "expected <hostport>:<port> after PUBLISH"),
        ("PUBLISH 8080", "2:9", "expected <hostport>:<port>[/tcp|udp], not '8080'"),
        ("PUBLISH 0:80", "2:9", "bad host port '0'"),
        ("PUBLISH 70000:80", "2:9", "bad host port '70000'"),
        ("PUBLISH 8080:65536", "2:14", "bad jail port '65536'"),
        ("PUBLISH :80", "2:9", "expected a host port"),
        ("PUBLISH 8080:80/sctp", "2:17", "expected tcp or udp after '/', not 'sctp'"),
        ("PUBLISH 8080:80 ON", "2:19", "expected an address after ON"),
        ("PUBLISH 8080:80 ON web", "2:20", "'web' is not an IPv4 or IPv6 address"),
        ("PUBLISH 8080:80 ON 127.0.0.1", "2:20", "not an address a port can be published on"),
        ("PUBLISH 8080:80 AT 198.51.100.7", "2:17", "unexpected 'AT'"),
        ("PUBLISH 8080:80 ON 198.51.100.7 x", "2:33", "PUBLISH ends after ON"),
        ("PUBLISH 8080:80\nPUBLISH 8080:81", "3:1", "published twice (first at line 2)"),
    ],
)
def test_malformed_publish_lines_are_refused_with_their_place(
    line: str, where: str, message: str
) -> None:
    with pytest.raises(RexfileError) as err:
        parse(f"BASE x\n{line}\n", file="f.rex")
    assert f"f.rex:{where}:" in str(err.value)
    assert message in str(err.value)
    assert err.value.hint


def test_the_same_host_port_on_two_addresses_or_protocols_is_fine() -> None:
    rf = parse("BASE x\nPUBLISH 53:53/udp\nPUBLISH 53:53/tcp\n"
               "PUBLISH 80:80 ON 198.51.100.7\nPUBLISH 80:81 ON 198.51.100.8\n")  # fmt: skip
    assert len(rf.publish) == 4


# -- the record --------------------------------------------------------------------


def test_the_record_keeps_published_ports_and_refuses_bad_ones() -> None:
    rec = JailRecord("web", publish=(PublishEntry(8080, 80), PublishEntry(53, 53, "udp", "::1")))
    assert JailRecord.from_json(rec.as_json()) == rec
    assert str(rec.publish[0]) == "8080->80/tcp" and str(rec.publish[1]) == "::1:53->53/udp"
    for bad in ({"host_port": 0, "port": 80}, {"host_port": 80, "port": 80, "proto": "sctp"},
                {"host_port": 80, "port": 80, "on": "nowhere"}):  # fmt: skip
        with pytest.raises(Exception, match="malformed jail record"):
            JailRecord.from_json({**rec.as_json(), "publish": [bad]})


# -- configuration ---------------------------------------------------------------


def test_publish_allow_and_nat_settings(tmp_path: Path) -> None:
    def cfg(**env: str):  # type: ignore[no-untyped-def]
        return load_config(root=tmp_path, environ={**TESTING_ENV, **env})

    c = cfg(REX_PUBLISH_ALLOW="80, 440-443", REX_NAT="yes", REX_NAT_INTERFACE="eth1")
    assert c.publish_allow == ((80, 80), (440, 443)) and c.nat and c.nat_interface == "eth1"
    assert [p for p in (22, 80, 439, 441, 1023, 1024, 8080) if c.publish_allowed(p)] == [
        80, 441, 1024, 8080]  # fmt: skip
    assert not cfg().nat and cfg().publish_allow == ()
    for key, bad in (("REX_PUBLISH_ALLOW", "1024"), ("REX_PUBLISH_ALLOW", "0"),
                     ("REX_PUBLISH_ALLOW", "443-80"), ("REX_PUBLISH_ALLOW", "http"),
                     ("REX_NAT", "maybe"), ("REX_NAT_INTERFACE", "bad name")):  # fmt: skip
        with pytest.raises(ConfigError):
            cfg(**{key: bad})
    # pf translates on one interface: FreeBSD needs the uplink named
    with pytest.raises(ConfigError, match="nat_interface"):
        load_config(root=tmp_path, environ={"REX_RUNTIME": "freebsd", "REX_NAT": "true"})


# -- admission -----------------------------------------------------------------------


def _snapshot(eng: Engine) -> tuple[object, ...]:
    store = sorted(e.key for e in eng.host.store.list(""))
    return store, _fw(eng.host).ruleset, _fw(eng.host).loads


def test_bad_publish_lines_are_refused_before_anything_changes(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    assert isinstance(eng.host.platform, FakePlatform)
    eng.host.platform.addresses.append(ip("198.51.100.1"))
    _up(eng, tmp_path, "web", "PUBLISH 8080:80\n")
    before = _snapshot(eng)
    cases = [
        ("PUBLISH 80:80\n", PortRefused, "below 1024 and not allowed"),
        ("PUBLISH 7443:80\n", PortRefused, "control port"),
        ("PUBLISH 2379:80\n", PortRefused, "control port"),
        ("PUBLISH 8080:80\n", PortTaken, "jail web already publishes tcp port 8080"),
        ("PUBLISH 8080:81 ON 198.51.100.1\n", PortTaken, "jail web already publishes"),
        ("PUBLISH 9090:80 ON 198.51.100.99\n", PublishAddressRefused, "not one of this host's"),
        ("PUBLISH 9090:80 ON 2001:db8::1\n", PublishAddressRefused, "not one of this host's"),
    ]
    for text, error, message in cases:
        with pytest.raises(error, match=message) as err:
            _up(eng, tmp_path, "other", text)
        assert err.value.hint
        assert _snapshot(eng) == before, text
    assert {PortRefused.exit_code, PortTaken.exit_code, PublishAddressRefused.exit_code,
            HooksMissing.exit_code} == {75, 76, 77, 78}  # fmt: skip
    # another protocol, or the same port udp, is not taken
    _up(eng, tmp_path, "dns", "PUBLISH 8080:53/udp\n")


def test_a_low_port_is_published_when_allowed_and_dns_stays_the_hosts(tmp_path: Path) -> None:
    eng = _engine(tmp_path, REX_PUBLISH_ALLOW="53,80")
    _up(eng, tmp_path, "web", "PUBLISH 80:80\n")
    with pytest.raises(PortRefused, match="DNS or syslog"):
        _up(eng, tmp_path, "dns", "PUBLISH 53:53/udp\n")


def test_publish_and_nat_are_refused_while_pf_lacks_the_anchor_lines(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    _fw(eng.host).missing = ['rdr-anchor "rexcarcer/*"']
    before = _snapshot(eng)
    with pytest.raises(HooksMissing, match='lacks: rdr-anchor "rexcarcer/\\*"') as err:
        _up(eng, tmp_path, "web", "PUBLISH 8080:80\n")
    assert err.value.hint and "pf.conf" in err.value.hint
    assert _snapshot(eng) == before
    _up(eng, tmp_path, "plain", "")  # without PUBLISH (and NAT off) nothing needs pf
    check = _firewall(eng.host)
    assert not check.ok and "PUBLISH and NAT are refused" in check.detail
    nat = _engine(tmp_path / "nat", REX_NAT="true")
    _fw(nat.host).missing = ['nat-anchor "rexcarcer/*"']
    with pytest.raises(HooksMissing, match="egress NAT"):
        _up(nat, tmp_path, "plain", "")


# -- the ruleset ---------------------------------------------------------------------


def test_ports_are_in_the_firewall_exactly_while_the_jail_runs(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    info = _up(eng, tmp_path, "web", "PUBLISH 8080:80\nPUBLISH 5353:53/udp\n")
    assert [str(p) for p in info.publish] == ["8080->80/tcp", "5353->53/udp"]
    fw = _fw(eng.host)
    assert [(f.jail, f.host_port, f.jail_port, f.proto) for f in fw.ruleset.forwards] == [
        ("web", 8080, 80, Proto.TCP), ("web", 5353, 53, Proto.UDP)]  # fmt: skip
    assert str(fw.ruleset.forwards[0].jail_addr) == info.address.split("/")[0]  # type: ignore[union-attr]
    assert fw.ruleset.guard is not None  # the guard stays with them
    lifecycle.stop(eng, "web")
    assert fw.ruleset.forwards == ()
    lifecycle.start(eng, "web")
    assert len(fw.ruleset.forwards) == 2
    # a lost table (reboot, flush) comes back from what the store and runtime say
    fw.ruleset = type(fw.ruleset)()
    assert reapply(eng.host) is True and len(fw.ruleset.forwards) == 2
    assert reapply(eng.host) is False  # nothing to do the second time
    assert "2 published port(s) declared" in firewall_setup(eng.host)
    jails.destroy(eng, "web")
    assert fw.ruleset.forwards == ()


def test_nat_masquerades_the_jail_subnet_and_keeps_public_and_cluster_traffic(
    tmp_path: Path,
) -> None:
    eng = _engine(tmp_path, REX_NAT="true", REX_NAT_INTERFACE="eth1",
                  REX_PUBLIC_IPS="198.51.100.16/28@eth1")  # fmt: skip
    assert masquerade_for(eng.host.config) == Masquerade(
        ipaddress.ip_network("203.0.113.0/24"), "eth1",
        (ipaddress.ip_network("198.51.100.16/28"),))  # fmt: skip
    reapply(eng.host)
    assert _fw(eng.host).ruleset.masquerade is not None
    assert "egress NAT on" in _firewall(eng.host).detail
    assert masquerade_for(_engine(tmp_path / "off").host.config) is None
    # with NAT on a jail gets a default route to its host, without it none
    from rexcarcer.platform.base import jail_routes

    assert [str(n) for n in jail_routes(eng.host.config)] == ["0.0.0.0/0"]
    assert jail_routes(_engine(tmp_path / "off2").host.config) == ()


def test_a_publishing_jail_routes_its_replies_through_the_host(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    _up(eng, tmp_path, "web", "PUBLISH 8080:80\n")
    _up(eng, tmp_path, "quiet", "")
    web = lifecycle.spec_for(eng, lifecycle.require(eng, "web"))
    quiet = lifecycle.spec_for(eng, lifecycle.require(eng, "quiet"))
    assert [str(n) for n in web.routes] == ["0.0.0.0/0"] and quiet.routes == ()


def test_plan_says_which_ports_a_new_jail_publishes(tmp_path: Path) -> None:
    from rexcarcer.engine.plan import plan_up
    from rexcarcer.rexfile.parser import load

    eng = _engine(tmp_path)
    rf = load(_rex(tmp_path, "web", "PUBLISH 8080:80\nPUBLISH 5353:53/udp\n"))
    actions = plan_up(eng, rf, "web")
    assert [a.description for a in actions if a.kind == "publish"] == [
        "publish 8080->80/tcp, 5353->53/udp once web runs (firewall)"]  # fmt: skip
    before = _snapshot(eng)
    with pytest.raises(PortRefused):
        plan_up(eng, load(_rex(tmp_path, "low", "PUBLISH 22:22\n")), "low")
    assert _snapshot(eng) == before
