"""The agent's jail sync with RESTART policies and DEPENDS, on the in-memory
drivers with the health hook: the boot path in dependency order, what each
policy does with a jail that stopped on its own, the restart backoff, and
what `rex up` and `rex destroy` refuse."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from rexcarcer.agent.jailsync import JailSync
from rexcarcer.dns.hook import DnsHook
from rexcarcer.dns.unbound import FakeUnbound
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import AgentRequired, DependencyError
from rexcarcer.health.hook import HealthHook
from rexcarcer.model.health import Health, HealthRecord
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.rexfile.ast import (
    Base,
    Depend,
    HealthCheck,
    Pos,
    Probe,
    RestartPolicy,
    Rexfile,
    Service,
)
from rexcarcer.service.local import LocalService
from rexcarcer.state.health import get_health, put_health
from rexcarcer.state.records import list_jails
from tests.unit.fakes import fake_engine, fake_runtime


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeUnbound:
    return FakeUnbound()


@pytest.fixture
def eng(tmp_path: Path, fake: FakeUnbound) -> Engine:
    return fake_engine(tmp_path, [HealthHook(), DnsHook(fake)])


def rexfile(tmp_path: Path, *deps: str, **kw: object) -> Rexfile:
    depends = tuple(Depend(d, Pos(3 + i, 1)) for i, d in enumerate(deps))
    return Rexfile(Base("bb"), depends=depends, path=tmp_path / "app.rex", **kw)  # type: ignore[arg-type]


def platform(e: Engine) -> FakePlatform:
    assert isinstance(e.host.platform, FakePlatform)
    return e.host.platform


def sync_of(e: Engine, clock: Clock | None = None, wall: Clock | None = None) -> JailSync:
    return JailSync(e, "h1", clock=clock or Clock(), wall=wall or Clock(1e9))


def state(e: Engine, name: str) -> Health | None:
    h = get_health(e.host.store, name)
    return h.state if h else None


def test_after_a_reboot_jails_start_in_dependency_order_whatever_their_policy(
    eng: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rexcarcer.agent")
    jails.up(eng, rexfile(tmp_path, restart=RestartPolicy.NO), "db")
    jails.up(eng, rexfile(tmp_path, "db"), "api")
    jails.up(eng, rexfile(tmp_path, "api", "db"), "web")
    rt = fake_runtime(eng.host)
    rt.running.clear()  # the host went down
    platform(eng).boot = "boot-2"
    started: list[str] = []
    real_start = rt.start
    rt.start = lambda spec: (started.append(spec.name), real_start(spec))[1]  # type: ignore[method-assign]
    assert sync_of(eng).sync(list_jails(eng.host.store)) == [
        ("db", "start"), ("api", "start"), ("web", "start")
    ]  # fmt: skip
    assert started == ["db", "api", "web"]
    assert "jails: started db (it has not run since the host booted)" in caplog.text
    assert all(get_health(eng.host.store, n).boot == "boot-2" for n in started)  # type: ignore[union-attr]


def test_a_jail_waits_until_the_jail_it_depends_on_is_healthy(
    eng: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rexcarcer.agent")
    check = HealthCheck(Probe.TCP, port=5432)
    jails.up(eng, rexfile(tmp_path, healthcheck=check), "db")
    jails.up(eng, rexfile(tmp_path, "db"), "web")
    fake_runtime(eng.host).running.clear()
    platform(eng).boot = "boot-2"
    sync = sync_of(eng)
    assert sync.sync(list_jails(eng.host.store)) == [("db", "start")]
    assert "jails: web waits for db to be healthy before it starts" in caplog.text
    assert sync.sync(list_jails(eng.host.store)) == []  # still starting
    assert caplog.text.count("waits for db") == 1  # said once
    h = get_health(eng.host.store, "db")
    assert h is not None
    put_health(eng.host.store, h.replace(state=Health.HEALTHY))  # the health thread's verdict
    assert sync.sync(list_jails(eng.host.store)) == [("web", "start")]


@pytest.mark.parametrize(
    ("policy", "status", "restarted"),
    [
        (RestartPolicy.ON_FAILURE, 137, True),  # init killed (SIGKILL)
        (RestartPolicy.ON_FAILURE, 0, False),  # the jail shut itself down
        (RestartPolicy.ON_FAILURE, None, True),  # the runtime cannot tell: a failure
        (RestartPolicy.ALWAYS, 0, True),
        (RestartPolicy.ALWAYS, 137, True),
        (RestartPolicy.NO, 137, False),
        (RestartPolicy.NO, 0, False),
    ],
)
def test_a_jail_that_stopped_on_its_own_follows_its_policy(
    eng: Engine,
    fake: FakeUnbound,
    tmp_path: Path,
    policy: RestartPolicy,
    status: int | None,
    restarted: bool,
) -> None:
    jails.up(eng, rexfile(tmp_path, restart=policy, services=(Service("web", 80),)), "app")
    rt = fake_runtime(eng.host)
    rt.die("app", status)
    sync = sync_of(eng)
    got = sync.sync(list_jails(eng.host.store))
    if restarted:
        assert got == [("app", "restart")] and "app" in rt.running
        h = get_health(eng.host.store, "app")
        assert h is not None and h.restarts == 1 and h.state is Health.NONE
        assert jails.info(eng, "app").health is None
        return
    assert got == [("app", "exited")] and "app" not in rt.running
    h = get_health(eng.host.store, "app")
    assert h is not None and h.state is Health.EXITED
    assert f"RESTART {policy} leaves it stopped" in h.reason
    assert not any(r.name.startswith("app.") for r in fake.data)  # withdrawn from DNS
    info = jails.info(eng, "app")
    assert (info.state, info.health) == ("stopped", "exited")
    assert sync.sync(list_jails(eng.host.store)) == []  # and left alone
    jails.start(eng, "app")  # until someone starts it
    assert state(eng, "app") is Health.NONE and "app" in rt.running


def test_restarts_back_off_when_a_jail_keeps_stopping(
    eng: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rexcarcer.agent")
    jails.up(eng, rexfile(tmp_path), "app")
    rt = fake_runtime(eng.host)
    clock = Clock()
    wall = Clock(1e9)
    sync = sync_of(eng, clock, wall)
    h = get_health(eng.host.store, "app")
    assert h is not None
    put_health(eng.host.store, h.replace(started=wall.now))
    waits = []
    for _ in range(4):
        rt.die("app", 137)  # again within seconds of its start
        got = sync.sync(list_jails(eng.host.store))
        wait = 0.0
        while got == []:
            assert sync.next_wake() is not None
            wait = (sync.next_wake() or 0) - clock.now
            clock.now += wait
            got = sync.sync(list_jails(eng.host.store))
        assert got == [("app", "restart")]
        waits.append(wait)
        h = get_health(eng.host.store, "app")
        assert h is not None
        put_health(eng.host.store, h.replace(started=wall.now))
    assert waits == [0, 1, 2, 4]
    assert "starting it again in 4 s (4 stops within 30 s of a start)" in caplog.text
    assert (get_health(eng.host.store, "app") or h).restarts == 4
    wall.now += 60  # it then ran a minute: the count starts again
    rt.die("app", 137)
    assert sync.sync(list_jails(eng.host.store)) == [("app", "restart")]


def test_up_refuses_bad_dependencies_before_changing_anything(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path), "db")
    jails.up(eng, rexfile(tmp_path, "db"), "api")
    before = sorted(e.key for e in eng.host.store.list(""))
    cases = [
        ("web", rexfile(tmp_path, "web"), "app.rex:3:1: jail web depends on itself"),
        ("web", rexfile(tmp_path, "db", "nosuch"),
         "app.rex:4:1: DEPENDS nosuch: no jail named 'nosuch'"),
        # db, updated to depend on api, which depends on db
        ("db", rexfile(tmp_path, "api"), "app.rex:3:1: DEPENDS api makes a cycle: db -> api -> db"),
    ]  # fmt: skip
    for name, rf, message in cases:
        with pytest.raises(DependencyError) as err:
            jails.up(eng, rf, name)
        assert message in str(err.value), str(err.value)
        assert err.value.exit_code == 51 and err.value.hint
    assert sorted(e.key for e in eng.host.store.list("")) == before
    assert set(fake_runtime(eng.host).running) == {"db", "api"}


def test_destroy_refuses_a_jail_others_depend_on(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path), "db")
    jails.up(eng, rexfile(tmp_path, "db"), "api")
    with pytest.raises(DependencyError, match="jail db is needed by api"):
        jails.destroy(eng, "db")
    assert "db" in fake_runtime(eng.host).running
    jails.destroy(eng, "api")
    jails.destroy(eng, "db")


def test_up_needs_the_agent_for_what_only_the_agent_does(eng: Engine, tmp_path: Path) -> None:
    svc = LocalService(lambda: eng)
    eng.close = lambda: None  # type: ignore[method-assign]  # one engine for every call
    sock_path = eng.host.config.agent_socket
    for kw in ({"restart": RestartPolicy.ALWAYS},
               {"healthcheck": HealthCheck(Probe.TCP, port=80)}):  # fmt: skip
        with pytest.raises(AgentRequired) as err:
            svc.up(rexfile(tmp_path, **kw), "app")
        assert err.value.exit_code == 52 and "no agent runs on this host" in str(err.value)
        assert "rex host setup" in (err.value.hint or "")
    assert eng.host.store.list("") == []
    svc.up(rexfile(tmp_path), "plain")  # nothing of the agent's: fine without it
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as listener:  # an agent answers
        listener.bind(str(sock_path))
        listener.listen(4)
        svc.up(rexfile(tmp_path, "plain", restart=RestartPolicy.NO), "app")
    assert jails.record(eng, "app") is not None


def test_health_record_round_trip() -> None:
    h = HealthRecord("web", Health.UNHEALTHY, "b", 1.5, 2.5, "TCP 80: refused", 3)
    assert HealthRecord.from_json(h.as_json()) == h
    assert h.shown == "unhealthy" and HealthRecord("x", Health.NONE).shown is None


def test_a_restart_that_waits_for_a_dependency_does_not_spin(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path, healthcheck=HealthCheck(Probe.TCP, port=5432)), "db")
    jails.up(eng, rexfile(tmp_path, "db"), "web")
    clock = Clock()
    sync = sync_of(eng, clock)
    fake_runtime(eng.host).die("web", 137)  # db has no verdict yet: web must wait
    assert sync.sync(list_jails(eng.host.store)) == []
    assert sync.next_wake() is None  # due now but blocked: the health verdict wakes it
    h = get_health(eng.host.store, "db")
    assert h is not None
    put_health(eng.host.store, h.replace(state=Health.HEALTHY))
    assert sync.sync(list_jails(eng.host.store)) == [("web", "restart")]


def test_after_a_reboot_a_jail_that_cannot_start_leaves_dns_until_it_starts(
    eng: Engine, tmp_path: Path, fake: FakeUnbound, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rexcarcer.agent")
    svc = (Service("db", 5432, "tcp", Pos(2, 1)),)
    jails.up(eng, rexfile(tmp_path, services=svc), "db")
    jails.up(eng, rexfile(tmp_path, "db"), "api")
    jails.up(eng, rexfile(tmp_path), "ok")

    def names() -> set[str]:
        return {r.name.split(".")[0] for r in fake.list() if ".jail." in r.name}

    assert names() == {"db", "api", "ok"}
    rt = fake_runtime(eng.host)
    rt.running.clear()  # the host went down; unbound serves what was published
    platform(eng).boot = "boot-2"
    rt.fail_start.add("db")
    clock = Clock()
    sync = sync_of(eng, clock)
    assert sync.sync(list_jails(eng.host.store)) == [("ok", "start")]
    # db failed to start, api waits for it: neither answers, ok does
    assert names() == {"ok"}
    assert not [r for r in fake.list() if r.name.startswith("db.svc.")]
    assert get_health(eng.host.store, "db") is None
    assert "jails: db has not run since the host booted and cannot start yet" in caplog.text
    assert "jails: api has not run since the host booted and cannot start yet" in caplog.text
    clock.now += 5
    assert sync.sync(list_jails(eng.host.store)) == []  # still failing: taken down once
    assert caplog.text.count("db has not run since") == 1
    rt.fail_start.clear()
    clock.now += 10
    assert sync.sync(list_jails(eng.host.store)) == [("db", "start"), ("api", "start")]
    assert names() == {"db", "api", "ok"}
    assert [r for r in fake.list() if r.name.startswith("db.svc.")]
