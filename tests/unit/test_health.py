"""Health checks on the in-memory drivers and real loopback sockets: the
monitor's verdicts, the probes, the DEPENDS graph, the restart rules, and the
agent's health thread taking an unhealthy jail out of its service records."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rexcarcer.agent.health import HealthChecks
from rexcarcer.dns.hook import DnsHook, publisher_for
from rexcarcer.dns.unbound import FakeUnbound
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.health import policy
from rexcarcer.health.hook import HealthHook
from rexcarcer.health.monitor import Monitor, Tracked
from rexcarcer.health.probe import http_get, probe, tcp
from rexcarcer.model.depends import dependents, find_cycle, start_order
from rexcarcer.model.health import Health, HealthRecord
from rexcarcer.model.jail import JailRecord
from rexcarcer.rexfile.ast import Base, HealthCheck, Probe, RestartPolicy, Rexfile, Service
from rexcarcer.runtime.base import JailEnd
from rexcarcer.state.health import get_health
from tests.unit.fakes import fake_engine, fake_runtime

LOOP = __import__("ipaddress").ip_address("127.0.0.1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the monitor ---------------------------------------------------------------------------


def test_one_pass_makes_healthy_and_retries_failures_make_unhealthy() -> None:
    clock = Clock()
    m = Monitor(clock)
    check = HealthCheck(Probe.TCP, port=80, interval_ms=2000, retries=2)
    m.track({"web": Tracked(check, 1.0, Health.STARTING)})
    assert [w.name for w in m.due()] == ["web"]  # at once
    assert m.due() == []  # one probe at a time
    v = m.result("web", 1.0, True, "TCP 80 accepted")
    assert v is not None and (v.state, v.previous) == (Health.HEALTHY, Health.STARTING)
    assert m.next_due() == 102.0  # INTERVAL after the probe began
    clock.now = 102.0
    m.due()
    assert m.result("web", 1.0, False, "refused") is None  # 1 of RETRIES 2
    clock.now = 104.0
    m.due()
    v = m.result("web", 1.0, False, "refused")
    assert v is not None and v.state is Health.UNHEALTHY
    assert v.reason == "2 probes in a row failed; last: refused"
    clock.now = 106.0
    m.due()
    assert m.result("web", 1.0, False, "refused") is None  # still unhealthy: no news
    clock.now = 108.0
    m.due()
    v = m.result("web", 1.0, True, "ok")
    assert v is not None and v.state is Health.HEALTHY


def test_a_new_run_starts_over_and_old_results_are_dropped() -> None:
    clock = Clock()
    m = Monitor(clock)
    check = HealthCheck(Probe.TCP, port=80, retries=1)
    m.track({"web": Tracked(check, 1.0, Health.HEALTHY)})  # an agent that restarted
    m.due()
    m.track({"web": Tracked(check, 2.0, Health.STARTING)})  # the jail was restarted
    assert m.result("web", 1.0, False, "late") is None  # a probe of the old run
    assert [w.name for w in m.due()] == ["web"]
    v = m.result("web", 2.0, False, "refused")
    assert v is not None and (v.previous, v.state) == (Health.STARTING, Health.UNHEALTHY)
    m.undo(v)  # could not be recorded: the next result gives it again
    clock.now += 20
    m.due()
    assert m.result("web", 2.0, False, "refused") is not None
    m.track({})
    assert m.watches == {}


def test_probe_timing_does_not_drift_and_a_slow_probe_is_not_repeated_at_once() -> None:
    clock = Clock()
    m = Monitor(clock)
    m.track({"a": Tracked(HealthCheck(Probe.TCP, port=1, interval_ms=1000), 0.0, Health.NONE)})
    m.due()
    clock.now += 3.5  # the probe took longer than the interval
    m.result("a", 0.0, True, "ok")
    assert m.next_due() == clock.now


# -- probes, for real on the loopback -------------------------------------------------------


@pytest.fixture
def web() -> Iterator[tuple[int, dict[str, int]]]:
    """An HTTP server on 127.0.0.1 answering with the status in ``state``."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def test_tcp_and_http_probes(web: tuple[int, dict[str, int]]) -> None:
    port, state = web
    assert tcp(LOOP, port, 1.0).ok
    assert http_get(LOOP, port, "/health", 1.0).ok
    state["status"] = 302  # a redirect counts, and is not followed
    assert http_get(LOOP, port, "/health", 1.0).ok
    state["status"] = 503
    res = http_get(LOOP, port, "/health", 1.0)
    assert not res.ok and "503" in res.reason
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    res = tcp(LOOP, closed, 1.0)
    assert not res.ok and "TCP" in res.reason


def test_an_http_probe_that_gets_no_answer_fails_in_its_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # accepts the connection, never answers
        begun = time.monotonic()
        res = http_get(LOOP, s.getsockname()[1], "/", 0.3)
    assert not res.ok and "no answer within 0.3 s" in res.reason
    assert time.monotonic() - begun < 2


def test_an_answer_trickled_byte_by_byte_does_not_outlast_the_timeout() -> None:
    """The timeout is a deadline for the whole exchange, not for each read."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        stop = threading.Event()

        def trickle() -> None:
            conn, _ = s.accept()
            with conn:
                for ch in b"HTTP/1.1 200 OK\r\n":
                    if stop.wait(0.1):
                        return
                    conn.sendall(bytes([ch]))

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        begun = time.monotonic()
        res = http_get(LOOP, s.getsockname()[1], "/", 0.5)
        took = time.monotonic() - begun
        stop.set()
        t.join()
    assert not res.ok and "no answer within 0.5 s" in res.reason
    assert took < 1.0


def test_an_answer_that_is_not_http_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)

        def babble() -> None:
            conn, _ = s.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\x1b[31m")

        t = threading.Thread(target=babble, daemon=True)
        t.start()
        port = s.getsockname()[1]
        res = http_get(LOOP, port, "/", 1.0)
        t.join()
    assert not res.ok
    assert res.reason == f"HTTP {port} /: not an HTTP answer: 'SSH-2.0-OpenSSH_9.6'"


def test_cmd_runs_in_the_jail_with_a_timeout(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    jails.up(eng, Rexfile(Base("bb"), path=tmp_path / "a.rex"), "app")
    rt = fake_runtime(eng.host)
    rt.handler = lambda cmd: 0 if "pgrep" in cmd else 3
    rec = jails.record(eng, "app")
    assert rec is not None
    check = HealthCheck(Probe.CMD, command="pgrep httpd", timeout_ms=1500)
    assert probe(rt, rec, check).ok
    assert rt.execs[-1] == ("app", ("timeout", "-s", "KILL", "2", "/bin/sh", "-c", "pgrep httpd"))
    res = probe(rt, rec, HealthCheck(Probe.CMD, command="false"))
    assert not res.ok and res.reason == "CMD exited 3"
    rt.running.pop("app")
    assert "not running" in probe(rt, rec, check).reason


# -- DEPENDS and RESTART rules --------------------------------------------------------------


def test_the_dependency_graph() -> None:
    graph = {"web": ("api",), "api": ("db", "cache"), "db": (), "cache": (), "cron": ("db",)}
    order = start_order(graph)
    assert order == ["cache", "db", "api", "cron", "web"]
    assert find_cycle(graph, "web") is None
    assert find_cycle({**graph, "db": ("web",)}, "db") == ["db", "web", "api", "db"]
    assert find_cycle({"a": ("a",)}, "a") == ["a", "a"]
    assert dependents(graph, "db") == ["api", "cron"]
    assert start_order({"a": ("b",), "b": ("a",), "c": ("elsewhere",)}) == ["c", "a", "b"]


def test_what_each_policy_restarts() -> None:
    killed, clean, unknown = JailEnd(137), JailEnd(0), JailEnd(None)
    table = {(p, e): policy.restart_wanted(p, e) for p in RestartPolicy
             for e in (killed, clean, unknown)}  # fmt: skip
    assert table == {
        (RestartPolicy.NO, killed): False, (RestartPolicy.NO, clean): False,
        (RestartPolicy.NO, unknown): False,
        (RestartPolicy.ON_FAILURE, killed): True, (RestartPolicy.ON_FAILURE, clean): False,
        (RestartPolicy.ON_FAILURE, unknown): True,
        (RestartPolicy.ALWAYS, killed): True, (RestartPolicy.ALWAYS, clean): True,
        (RestartPolicy.ALWAYS, unknown): True,
    }  # fmt: skip
    assert [policy.restart_delay(n) for n in range(1, 7)] == [0, 1, 2, 4, 8, 16]
    assert policy.restart_delay(30) == policy.MAX_DELAY
    assert killed.describe() == "its init was killed by signal 9"


def test_a_dependency_is_ready_when_healthy_or_running() -> None:
    check = HealthCheck(Probe.TCP, port=5432)
    db = JailRecord("db", healthcheck=check)
    plain = JailRecord("cache")
    web = JailRecord("web", depends=("db", "cache"))
    jails_ = {"db": db, "cache": plain, "web": web}

    def h(name: str, state: Health, boot: str = "b1") -> HealthRecord:
        return HealthRecord(name, state, boot)

    running = {"db": True, "cache": True, "web": False}
    health = {"db": h("db", Health.STARTING), "cache": h("cache", Health.NONE)}
    assert policy.waiting_for(web, jails_, health, running, "b1") == "db to be healthy"
    health["db"] = h("db", Health.HEALTHY)
    assert policy.waiting_for(web, jails_, health, running, "b1") is None
    # a record from before the reboot says nothing about now
    health["cache"] = h("cache", Health.NONE, boot="b0")
    assert policy.waiting_for(web, jails_, health, running, "b1") == "cache to be running"
    # another host's jail: its host's record is all there is
    assert policy.waiting_for(web, jails_, {"db": h("db", Health.HEALTHY, "x"),
                                            "cache": h("cache", Health.NONE, "x")},
                              {"web": False}, "b1") is None  # fmt: skip
    assert policy.waiting_for(JailRecord("x", depends=("gone",)), jails_, {}, {}, "b1") == (
        "gone, which does not exist"
    )


# -- the hook, DNS and the agent's health thread ----------------------------------------------

WEB = Service("web", 80)
CHECK = HealthCheck(Probe.CMD, command="check-web", interval_ms=100, timeout_ms=100, retries=2)


@pytest.fixture
def fake() -> FakeUnbound:
    return FakeUnbound()


@pytest.fixture
def eng(tmp_path: Path, fake: FakeUnbound) -> Engine:
    return fake_engine(tmp_path, [HealthHook(), DnsHook(fake)])


def svc_records(fake: FakeUnbound) -> list[str]:
    return sorted(r.line() for r in fake.data if ".svc." in r.name)


def names(fake: FakeUnbound) -> set[str]:
    return {r.name for r in fake.data}


def test_a_jail_with_a_check_starts_outside_its_service_records(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    jails.up(eng, Rexfile(Base("bb"), services=(WEB,), healthcheck=CHECK,
                          path=tmp_path / "a.rex"), "web1")  # fmt: skip
    h = get_health(eng.host.store, "web1")
    assert h is not None and h.state is Health.STARTING and h.boot == "boot-1"
    assert svc_records(fake) == [] and "web1.jail.rex.internal." in names(fake)
    assert jails.info(eng, "web1").health == "starting"
    # without a check nothing waits
    jails.up(eng, Rexfile(Base("bb"), services=(WEB,), path=tmp_path / "b.rex"), "web2")
    assert len(svc_records(fake)) == 2 and jails.info(eng, "web2").health is None
    jails.stop(eng, "web1")
    assert get_health(eng.host.store, "web1") is None


def health_checks(eng: Engine, fake: FakeUnbound) -> HealthChecks:
    def publish(e: Engine, rec: JailRecord) -> None:
        publisher_for(e.host, fake).publish(rec)

    return HealthChecks(eng, "h1", refresh=0.05, publish=publish)


def run_until(checks: HealthChecks, cond: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        checks.track()
        checks.step(0.05)


def test_an_unhealthy_jail_leaves_its_service_records_and_comes_back(
    eng: Engine, fake: FakeUnbound, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rexcarcer.agent")
    jails.up(eng, Rexfile(Base("bb"), services=(WEB,), healthcheck=CHECK,
                          path=tmp_path / "a.rex"), "web1")  # fmt: skip
    rt = fake_runtime(eng.host)
    ok = {"now": True}
    rt.handler = lambda cmd: 0 if ok["now"] else 1
    checks = health_checks(eng, fake)
    woken: list[bool] = []
    checks.wake = lambda: woken.append(True)

    def state() -> Health | None:
        h = get_health(eng.host.store, "web1")
        return h.state if h else None

    try:
        run_until(checks, lambda: state() is Health.HEALTHY)
        assert svc_records(fake) == [
            "_web._tcp.svc.rex.internal. 30 IN SRV 10 100 80 web1.jail.rex.internal.",
            "web.svc.rex.internal. 30 IN A 203.0.113.2",
        ]
        assert woken and jails.info(eng, "web1").health == "healthy"
        ok["now"] = False
        run_until(checks, lambda: state() is Health.UNHEALTHY)
        assert svc_records(fake) == [] and "web1.jail.rex.internal." in names(fake)
        assert "health: web1 is unhealthy (was healthy): 2 probes in a row failed; last: " \
            "CMD exited 1" in caplog.text  # fmt: skip
        ok["now"] = True
        run_until(checks, lambda: state() is Health.HEALTHY)
        assert len(svc_records(fake)) == 2
    finally:
        checks.pool.shutdown()


def test_a_verdict_waits_while_a_command_holds_the_jail(
    eng: Engine, fake: FakeUnbound, tmp_path: Path
) -> None:
    jails.up(eng, Rexfile(Base("bb"), services=(WEB,), healthcheck=CHECK,
                          path=tmp_path / "a.rex"), "web1")  # fmt: skip
    checks = health_checks(eng, fake)
    try:
        with eng.host.lock(jails.lock_name("web1")):
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline:
                checks.track()
                checks.step(0.05)
            h = get_health(eng.host.store, "web1")
            assert h is not None and h.state is Health.STARTING
        run_until(checks, lambda: (get_health(eng.host.store, "web1") or h).state
                  is Health.HEALTHY)  # fmt: skip
    finally:
        checks.pool.shutdown()
