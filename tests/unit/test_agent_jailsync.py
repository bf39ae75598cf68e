"""The agent's jail reconciliation on the in-memory drivers: started again when
wanted running, stopped when wanted stopped, other hosts' and half-made jails
left alone, a busy jail skipped, a failing start retried with a growing delay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rexcarcer import ipam
from rexcarcer.agent.jailsync import JailSync
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.model.jail import JailRecord, Status
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state import records
from rexcarcer.state.base import put_json
from rexcarcer.state.records import list_jails
from tests.unit.test_engine import eng, rexfile  # noqa: F401  (fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view(e: Engine) -> list[JailRecord]:
    return list_jails(e.host.store)


def runtime(e: Engine) -> FakeRuntime:
    assert isinstance(e.host.runtime, FakeRuntime)
    return e.host.runtime


def test_a_jail_that_died_is_started_again(eng: Engine, tmp_path: Path) -> None:  # noqa: F811
    jails.up(eng, rexfile(tmp_path), "app")
    sync = JailSync(eng, "h1")
    assert sync.sync(view(eng)) == []  # as wanted: nothing to do
    runtime(eng).running.pop("app")  # its init died, or the host rebooted
    assert sync.sync(view(eng)) == [("app", "start")]
    assert "app" in runtime(eng).running
    assert sync.sync(view(eng)) == []


def test_a_stopped_jail_stays_stopped_and_is_stopped_if_found_running(
    eng: Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    jails.up(eng, rexfile(tmp_path), "app")
    jails.stop(eng, "app")
    sync = JailSync(eng, "h1")
    assert sync.sync(view(eng)) == []
    spec = jails.spec_for(eng, jails.record(eng, "app") or JailRecord("app"))
    runtime(eng).running["app"] = spec
    assert sync.sync(view(eng)) == [("app", "stop")]
    assert "app" not in runtime(eng).running


def test_other_hosts_and_half_made_jails_are_left_alone(
    eng: Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    put_json(eng.host.store, "jails/far", {"name": "far", "host": "h2", "desired": "running"})
    me = os.getpid()  # a live run is creating it
    put_json(eng.host.store, "jails/new", {"name": "new", "host": "h1", "status": "creating",
             "desired": "running", "pid": me,
             "pid_start": eng.host.platform.process_start(me)})  # fmt: skip
    assert JailSync(eng, "h1").sync(view(eng)) == []
    assert runtime(eng).running == {}
    assert jails.record(eng, "new") is not None


def test_what_an_abandoned_rex_up_left_is_removed(eng: Engine, tmp_path: Path) -> None:  # noqa: F811
    """A `rex up` whose rollback ZFS could not finish (no PID), or one killed (a
    dead PID): the agent's tick removes the record, dataset and address; a jail a
    rex command holds is left for the next tick."""
    for name in ("lost", "killed"):
        jails.up(eng, rexfile(tmp_path), name)
    eng.host.runtime.remove("lost")
    dead = jails.record(eng, "killed")
    assert dead is not None
    records.put_jail(eng.host.store, dead.replace(status=Status.CREATING, pid=2**22 + 1))
    lost = jails.record(eng, "lost")
    assert lost is not None
    records.put_jail(eng.host.store, lost.replace(status=Status.CREATING, pid=None,
                                                  pid_start=None, pid_ticks=None))  # fmt: skip
    sync = JailSync(eng, "h1")
    with eng.host.claim(jails.operation_lock("killed"), "a test"):
        assert sync.sync(view(eng)) == [("lost", "recovered")]
    assert sync.sync(view(eng)) == [("killed", "recovered")]
    for name in ("lost", "killed"):
        assert jails.record(eng, name) is None
        assert not eng.host.storage.exists(f"jails/{name}")
        assert name not in ipam.taken(eng.host.store).values()
    assert sync.sync(view(eng)) == []


def test_a_jail_a_command_works_on_is_skipped(eng: Engine, tmp_path: Path) -> None:  # noqa: F811
    jails.up(eng, rexfile(tmp_path), "app")
    runtime(eng).running.pop("app")
    sync = JailSync(eng, "h1")
    with eng.host.lock(jails.lock_name("app")):
        assert sync.sync(view(eng)) == []
    assert sync.sync(view(eng)) == [("app", "start")]


def test_a_failing_start_is_retried_later_and_logged(
    eng: Engine,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jails.up(eng, rexfile(tmp_path), "app")
    rt = runtime(eng)
    rt.running.pop("app")
    rt.fail_start.add("app")
    clock = Clock()
    sync = JailSync(eng, "h1", clock=clock)
    assert sync.sync(view(eng)) == []
    assert "cannot start app (attempt 1; next in 5 s)" in caplog.text
    clock.now += 4
    assert sync.sync(view(eng)) == []  # not yet
    assert "attempt 2" not in caplog.text
    clock.now += 1
    assert sync.sync(view(eng)) == []
    assert "attempt 2; next in 10 s" in caplog.text
    rt.fail_start.clear()
    clock.now += 10
    assert sync.sync(view(eng)) == [("app", "start")]
    assert sync.backoff == {}
