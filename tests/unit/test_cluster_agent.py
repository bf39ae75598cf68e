"""The agent's planning on the memory store and fakes: which records every
resolver serves (live hosts only), routes to other hosts' subnets, and the
agent's handling of watch updates. Jail names are cluster-wide in the engine."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from rexcarcer.agent.cluster import Agent
from rexcarcer.cluster import membership, model
from rexcarcer.cluster.dnssync import DnsSync, desired
from rexcarcer.cluster.routes import RouteSync, plan
from rexcarcer.dns.records import Record, jail_records, sentinel
from rexcarcer.dns.unbound import FakeUnbound
from rexcarcer.errors import Conflict
from rexcarcer.model.jail import JailRecord
from rexcarcer.platform import freebsd, linux
from rexcarcer.run import ScriptedRunner
from rexcarcer.state.base import Delete, Entry, Put, dumps, put_json
from rexcarcer.state.lease import FakeLeases, LeaseKeeper
from rexcarcer.state.memory import MemoryStore
from rexcarcer.state.watch import Event, Kind, Update

ZONE = "rex.internal"


def view_of(store: MemoryStore) -> dict[str, Entry]:
    return {e.key: e for e in store.list("")}


def publish(store: MemoryStore, jail: str, host: str, ip: str, services: Any = ()) -> None:
    rec = {"name": jail, "address": f"{ip}/26", "hostname": f"{jail}.jail.{ZONE}",
           "services": list(services)}  # fmt: skip
    records = [r.as_json() for r in jail_records(JailRecord.from_json(rec), ZONE)]
    put_json(store, f"dns/{jail}", {"jail": jail, "host": host, "records": records})


@pytest.fixture
def cluster() -> tuple[MemoryStore, FakeLeases]:
    store = MemoryStore()
    membership.init(store, model.make_settings("203.0.113.0/24", ZONE, 26))
    leases = FakeLeases(store)
    membership.join(store, leases, "h1", "198.51.100.1")
    membership.join(store, leases, "h2", "198.51.100.2")
    publish(store, "web", "h1", "203.0.113.2")
    publish(store, "api", "h2", "203.0.113.66", [{"name": "api", "port": 80, "proto": "tcp"}])
    return store, leases


def _names(records: set[Record]) -> set[str]:
    return {r.name for r in records}


def test_desired_records_are_those_of_live_hosts(cluster: tuple[MemoryStore, FakeLeases]) -> None:
    store, leases = cluster
    names = _names(desired(view_of(store), ZONE))
    assert {"web.jail.rex.internal.", "api.jail.rex.internal.", "api.svc.rex.internal.",
            "_api._tcp.svc.rex.internal.", "66.113.0.203.in-addr.arpa."} <= names  # fmt: skip
    h2_lease = next(lease for lease, keys in leases.keys.items() if "hosts/h2/alive" in keys)
    leases.expire(h2_lease)
    names = _names(desired(view_of(store), ZONE))
    assert "web.jail.rex.internal." in names and "api.jail.rex.internal." not in names
    assert sentinel(ZONE) in desired(view_of(store), ZONE)


def _sync(backend: FakeUnbound, tmp_path: Path) -> DnsSync:
    return DnsSync(backend, ZONE, (f"{ZONE}.", "113.0.203.in-addr.arpa."),
                   tmp_path / "data.conf", lambda: nullcontext())  # fmt: skip


def test_dns_sync_adds_withdraws_and_repairs(
    cluster: tuple[MemoryStore, FakeLeases], tmp_path: Path
) -> None:
    store, leases = cluster
    backend = FakeUnbound()
    foreign = Record("example.org.", "A", "192.0.2.1", 300)  # not rex's: never touched
    backend.add([foreign])
    sync = _sync(backend, tmp_path)
    sync.sync(view_of(store))
    assert backend.data == desired(view_of(store), ZONE) | {foreign}
    assert "api.jail.rex.internal." in (tmp_path / "data.conf").read_text()
    assert sync.sync(view_of(store)).empty  # nothing changed: nothing done
    for lease in [x for x, keys in leases.keys.items() if "hosts/h2/alive" in keys]:
        leases.expire(lease)
    sync.sync(view_of(store))
    assert "api.jail.rex.internal." not in _names(backend.data)
    assert "66.113.0.203.in-addr.arpa." not in _names(backend.data)
    backend.reload()  # run-time data lost: the sentinel is gone, all comes back
    sync.sync(view_of(store))
    assert sentinel(ZONE) in backend.data and "web.jail.rex.internal." in _names(backend.data)


def test_dns_sync_removes_a_destroyed_jails_ptr_outside_managed_zones(
    cluster: tuple[MemoryStore, FakeLeases], tmp_path: Path
) -> None:
    store, _ = cluster
    backend = FakeUnbound()
    sync = DnsSync(backend, ZONE, (f"{ZONE}.",), None, lambda: nullcontext())
    sync.sync(view_of(store))
    store.commit([], [Delete("dns/api")])
    sync.sync(view_of(store))
    assert not any("66.113" in r.name for r in backend.data)


def test_routes_go_to_other_hosts_subnets(cluster: tuple[MemoryStore, FakeLeases]) -> None:
    store, _ = cluster
    want = model.routes(view_of(store), "h1")
    assert want == {ipaddress.ip_network("203.0.113.64/26"): ipaddress.ip_address("198.51.100.2")}
    current = {ipaddress.ip_network("203.0.113.128/26"): ipaddress.ip_address("198.51.100.3")}
    change = plan(current, want)
    assert [str(n) for n, _ in change.add] == ["203.0.113.64/26"]
    assert [str(n) for n in change.remove] == ["203.0.113.128/26"]
    assert plan(want, want).empty


def test_route_sync_on_linux_reads_back_its_own_routes() -> None:
    runner = ScriptedRunner()
    shown = '[{"dst":"203.0.113.128/26","gateway":"198.51.100.3","protocol":"213"}]'
    runner.on(["ip", "-4", "-j", "route", "show"], shown)
    runner.on(["ip", "-6", "-j", "route", "show"], "[]")
    net = ipaddress.ip_network("203.0.113.64/26")
    via = ipaddress.ip_address("198.51.100.2")
    RouteSync(linux.IpRoutes(runner)).sync({net: via})
    assert runner.calls[2:] == [
        ("ip", "route", "del", "203.0.113.128/26", "proto", "213"),
        tuple(linux.route_add_argv(net, via)),
    ]
    assert linux.parse_routes("[]") == {}


def test_route_sync_on_freebsd_changes_an_existing_route() -> None:
    runner = ScriptedRunner()
    runner.on(["route", "-n", "add"], "route: writing to routing socket: File exists", 1)
    net = ipaddress.ip_network("203.0.113.64/26")
    RouteSync(freebsd.RouteCommands(runner)).sync({net: ipaddress.ip_address("198.51.100.2")})
    assert runner.calls[-1] == ("route", "-n", "change", "-net", "203.0.113.64/26",
                                "198.51.100.2")  # fmt: skip


def test_agent_reconciles_on_changes_and_idle(cluster: tuple[MemoryStore, FakeLeases]) -> None:
    store, leases = cluster
    backend = FakeUnbound()
    keeper = LeaseKeeper(leases, 3, {"hosts/h1/alive": "{}"})
    agent = Agent("h1", store, keeper, DnsSync(backend, ZONE, (f"{ZONE}.",), None,  # type: ignore[arg-type]
                  lambda: nullcontext()))  # fmt: skip
    entries = tuple(store.list(""))
    agent.handle(Update(Kind.RESET, store.revision, entries=entries))
    assert "api.jail.rex.internal." in _names(backend.data)
    gone = Event("hosts/h2/alive", None, store.revision + 1)
    agent.handle(Update(Kind.CHANGES, gone.revision, events=(gone,)))
    assert "api.jail.rex.internal." not in _names(backend.data)
    syncs = agent.syncs
    agent.handle(Update(Kind.IDLE, gone.revision))
    assert agent.syncs == syncs + 1


# -- jail names are cluster-wide --------------------------------------------------------


@contextmanager
def _cluster_host(tmp_path: Path, store: MemoryStore, name: str) -> Iterator[Any]:
    from rexcarcer.base.source import Bases
    from rexcarcer.config import TESTING_ENV, load_config
    from rexcarcer.engine.base import Engine
    from rexcarcer.host import Host
    from rexcarcer.netpolicy.policy import NetworkPolicy
    from rexcarcer.platform.fake import FakePlatform
    from rexcarcer.progress import QuietProgress
    from rexcarcer.storage.fake import FakeStorage

    config = load_config(root=tmp_path / name, environ={
        "REX_SUBNET": "203.0.113.0/26", **TESTING_ENV, "REX_HOST": name,
        "REX_ETCD": "http://198.51.100.1:2379"})  # fmt: skip
    runner = ScriptedRunner()
    host = Host(config, runner, FakeStorage(tmp_path / f"zfs-{name}"),
                FakePlatform(runner, config), store, QuietProgress())  # fmt: skip
    yield Engine(host, Bases(), policy=NetworkPolicy())


def test_another_hosts_jail_is_never_touched(tmp_path: Path) -> None:
    from rexcarcer.engine import jails

    store = MemoryStore()
    rec = {"name": "web", "host": "h1", "status": "ready", "desired": "running",
           "address": "203.0.113.2/26", "hostname": "web.jail.rex.internal"}  # fmt: skip
    store.commit([], [Put("jails/web", dumps(rec))])
    with _cluster_host(tmp_path, store, "h2") as h2:
        for action in (jails.destroy, jails.start, jails.stop):
            with pytest.raises(Conflict, match="already exists on host 'h1'"):
                action(h2, "web")
        [listed] = jails.list_jails(h2)
        assert listed.host == "h1" and listed.state == "running"
    assert store.get("jails/web") is not None
