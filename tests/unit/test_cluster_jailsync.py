"""The agent's jail reconciliation on the in-memory drivers: started again when
wanted running, stopped when wanted stopped, other hosts' and half-made jails
left alone, a busy jail skipped, a failing start retried with a growing delay."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.cluster.jailsync import JailSync
from rexcarcer.engine import jails
from rexcarcer.engine.host import Host
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.base import Entry, put_json
from tests.unit.test_engine import host, rexfile  # noqa: F401  (fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view(h: Host) -> dict[str, Entry]:
    return {e.key: e for e in h.store.list("")}


def runtime(h: Host) -> FakeRuntime:
    assert isinstance(h.runtime, FakeRuntime)
    return h.runtime


def test_a_jail_that_died_is_started_again(host: Host, tmp_path: Path) -> None:  # noqa: F811
    jails.up(host, rexfile(tmp_path), "app")
    sync = JailSync(host, "h1")
    assert sync.sync(view(host)) == []  # as wanted: nothing to do
    runtime(host).running.pop("app")  # its init died, or the host rebooted
    assert sync.sync(view(host)) == [("app", "start")]
    assert "app" in runtime(host).running
    assert sync.sync(view(host)) == []


def test_a_stopped_jail_stays_stopped_and_is_stopped_if_found_running(
    host: Host,  # noqa: F811
    tmp_path: Path,
) -> None:
    jails.up(host, rexfile(tmp_path), "app")
    jails.stop(host, "app")
    sync = JailSync(host, "h1")
    assert sync.sync(view(host)) == []
    spec = jails.spec_for(host, jails.record(host, "app") or {})
    runtime(host).running["app"] = spec
    assert sync.sync(view(host)) == [("app", "stop")]
    assert "app" not in runtime(host).running


def test_other_hosts_and_half_made_jails_are_left_alone(
    host: Host,  # noqa: F811
    tmp_path: Path,
) -> None:
    put_json(host.store, "jails/far", {"name": "far", "host": "h2", "desired": "running"})
    put_json(host.store, "jails/new", {"name": "new", "host": "h1", "status": "creating",
                                       "desired": "running"})  # fmt: skip
    assert JailSync(host, "h1").sync(view(host)) == []
    assert runtime(host).running == {}


def test_a_jail_a_command_works_on_is_skipped(host: Host, tmp_path: Path) -> None:  # noqa: F811
    jails.up(host, rexfile(tmp_path), "app")
    runtime(host).running.pop("app")
    sync = JailSync(host, "h1")
    with host.lock(jails.lock_name("app")):
        assert sync.sync(view(host)) == []
    assert sync.sync(view(host)) == [("app", "start")]


def test_a_failing_start_is_retried_later_and_logged(
    host: Host,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jails.up(host, rexfile(tmp_path), "app")
    rt = runtime(host)
    rt.running.pop("app")
    rt.fail_start.add("app")
    clock = Clock()
    sync = JailSync(host, "h1", clock=clock)
    assert sync.sync(view(host)) == []
    assert "cannot start app (attempt 1; next in 5 s)" in caplog.text
    clock.now += 4
    assert sync.sync(view(host)) == []  # not yet
    assert "attempt 2" not in caplog.text
    clock.now += 1
    assert sync.sync(view(host)) == []
    assert "attempt 2; next in 10 s" in caplog.text
    rt.fail_start.clear()
    clock.now += 10
    assert sync.sync(view(host)) == [("app", "start")]
    assert sync.backoff == {}
