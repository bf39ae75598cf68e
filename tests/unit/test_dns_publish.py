"""Publishing through the jail lifecycle: the DNS hook on the in-memory drivers
(fake runtime, storage, store and unbound), the same flow the integration
tests run against the real unbound."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.dns import DnsError
from rexcarcer.dns.hook import DnsHook, dns_enabled, doctor_check, publisher_for
from rexcarcer.dns.records import Record, sentinel
from rexcarcer.dns.unbound import FakeUnbound, UnboundUnreachable, read_data_file
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict
from rexcarcer.rexfile.ast import Base, Proto, Rexfile, Service
from tests.unit.fakes import fake_engine

ZONE = "rex.internal"


@pytest.fixture
def fake() -> FakeUnbound:
    return FakeUnbound()


@pytest.fixture
def eng(tmp_path: Path, fake: FakeUnbound) -> Engine:
    return fake_engine(tmp_path, [DnsHook(fake)])


def rexfile(tmp_path: Path, *services: Service, hostname: str | None = None) -> Rexfile:
    return Rexfile(base=Base("bb"), services=services, hostname=hostname, path=tmp_path / "a.rex")


def served(fake: FakeUnbound) -> list[str]:
    return sorted(r.line() for r in fake.data if r.rtype != "TXT")


def data_file(eng: Engine) -> Path:
    return eng.host.config.root / "unbound" / "rexcarcer-data.conf"


WEB = Service("web", 80)


def test_up_publishes_before_returning_and_persists(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    jails.up(eng, rexfile(tmp_path, WEB), "hello")
    assert served(fake) == [
        "2.113.0.203.in-addr.arpa. 30 IN PTR hello.jail.rex.internal.",
        "_web._tcp.svc.rex.internal. 30 IN SRV 10 100 80 hello.jail.rex.internal.",
        "hello.jail.rex.internal. 30 IN A 203.0.113.2",
        "web.svc.rex.internal. 30 IN A 203.0.113.2",
    ]
    assert fake.has(sentinel(ZONE))
    assert set(read_data_file(data_file(eng))) == fake.data - {sentinel(ZONE)}


def test_stop_withdraws_and_start_republishes(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    jails.up(eng, rexfile(tmp_path, WEB), "hello")
    jails.stop(eng, "hello")
    assert served(fake) == []
    assert read_data_file(data_file(eng)) == []
    jails.start(eng, "hello")
    assert len(served(fake)) == 4


def test_two_instances_share_the_service_and_one_leaving_keeps_the_other(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    jails.up(eng, rexfile(tmp_path, WEB), "one")
    jails.up(eng, rexfile(tmp_path, Service("web", 8080, Proto.TCP)), "two")
    web = sorted(r.data for r in fake.data if r.name == "web.svc.rex.internal.")
    srv = sorted(r.data for r in fake.data if r.rtype == "SRV")
    assert web == ["203.0.113.2", "203.0.113.3"]
    assert srv == ["10 100 80 one.jail.rex.internal.", "10 100 8080 two.jail.rex.internal."]
    jails.destroy(eng, "one")
    assert sorted(r.data for r in fake.data if r.name == "web.svc.rex.internal.") == ["203.0.113.3"]
    assert [r.data for r in fake.data if r.rtype == "SRV"] == ["10 100 8080 two.jail.rex.internal."]
    assert not any(r.name.startswith("one.") for r in fake.data)


def test_hostname_is_claimed_and_a_second_owner_is_refused(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    jails.up(eng, rexfile(tmp_path, hostname="docs.example.com"), "docs")
    assert Record("docs.example.com.", "A", "203.0.113.2", 300) in fake.data
    before = set(fake.data)
    with pytest.raises(Conflict, match="already published by jail 'docs'"):
        jails.up(eng, rexfile(tmp_path, hostname="docs.example.com"), "docs2")
    assert fake.data == before
    assert jails.record(eng, "docs2") is None  # rolled back
    jails.destroy(eng, "docs")
    assert eng.host.store.list("names/") == []
    jails.up(eng, rexfile(tmp_path, hostname="docs.example.com"), "docs2")  # free again


EVIL = ['x"; local-zone: "example.com" redirect', "a.example.com. 1 IN A 1.2.3.4", "a.b.com\nc"]


@pytest.mark.parametrize("hostname", EVIL)
def test_injection_leaves_unbound_and_the_store_unchanged(
    eng: Engine, fake: FakeUnbound, tmp_path: Path, hostname: str
) -> None:
    jails.up(eng, rexfile(tmp_path, WEB), "good")
    before, commands = set(fake.data), list(fake.commands)
    with pytest.raises(DnsError, match="HOSTNAME"):
        jails.up(eng, rexfile(tmp_path, hostname=hostname), "evil")
    assert fake.data == before and fake.commands == commands
    assert jails.record(eng, "evil") is None
    assert [e.key for e in eng.host.store.list("dns/")] == ["dns/good"]


def test_reload_is_noticed_by_the_sentinel_and_repaired(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    jails.up(eng, rexfile(tmp_path, WEB), "one")
    fake.persisted = set(read_data_file(data_file(eng)))
    fake.data.add(Record("runtime-only.rex.internal.", "A", "203.0.113.99", 30))
    fake.reload()  # the file survives, the sentinel does not
    assert not fake.has(sentinel(ZONE))
    jails.up(eng, rexfile(tmp_path, Service("api", 81)), "two")  # any change checks first
    assert fake.has(sentinel(ZONE)) and len(served(fake)) == 8


def test_check_reports_and_repairs_drift(eng: Engine, fake: FakeUnbound, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path, WEB), "one")
    publisher = publisher_for(eng.host, fake)
    stray = Record("stray.jail.rex.internal.", "A", "203.0.113.77", 30)
    outside = Record("mine.example.org.", "A", "192.0.2.1", 60)  # not rex's: left alone
    fake.data |= {stray, outside}
    fake.remove(["web.svc.rex.internal."])
    running = {"one": jails.record(eng, "one") or {}}
    report = publisher.check(running, repair=False)
    assert [r.name for r in report.drift.missing] == ["web.svc.rex.internal."]
    assert report.drift.unexpected == (stray,) and not report.clean
    assert stray in fake.data  # a dry run changes nothing
    report = publisher.check(running, repair=True)
    assert publisher.check(running, repair=False).clean
    assert stray not in fake.data and outside in fake.data
    assert Record("web.svc.rex.internal.", "A", "203.0.113.2", 30) in fake.data


def test_check_publishes_jails_started_while_dns_was_off(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    hooks, eng.hooks = eng.hooks, []
    jails.up(eng, rexfile(tmp_path, WEB), "early")
    assert served(fake) == []
    eng.hooks = hooks
    early = jails.record(eng, "early")
    assert early is not None
    report = publisher_for(eng.host, fake).check({"early": early}, repair=True)
    assert report.published == ("early",) and len(served(fake)) == 4
    report = publisher_for(eng.host, fake).check({}, repair=True)
    assert report.withdrawn == ("early",) and served(fake) == []


def test_unbound_down_fails_up_but_not_stop(eng: Engine, fake: FakeUnbound, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path, WEB), "one")
    fake.up = False
    jails.stop(eng, "one")  # withdrawn from the store and the file all the same
    assert eng.host.store.list("dns/") == [] and read_data_file(data_file(eng)) == []
    with pytest.raises(UnboundUnreachable):
        jails.up(eng, rexfile(tmp_path, WEB), "two")
    assert jails.record(eng, "two") is None


def test_dns_mode_and_doctor(tmp_path: Path) -> None:
    env = {"REX_SUBNET": "203.0.113.0/24", **TESTING_ENV}
    auto = load_config(root=tmp_path, environ=env)
    assert not dns_enabled(auto)
    assert doctor_check(auto) == (True, doctor_check(auto)[1])
    assert "not published" in doctor_check(auto)[1]
    on = load_config(root=tmp_path, environ={**env, "REX_DNS": "on"})
    assert dns_enabled(on)
    ok, detail = doctor_check(on)
    assert not ok and "rex host serve" in detail
    off = load_config(root=tmp_path, environ={**env, "REX_DNS": "off"})
    assert not dns_enabled(off) and doctor_check(off)[0]
