"""The engine on the in-memory drivers: the same lifecycle the integration
tests run for real, in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rexcarcer.base import local as bases
from rexcarcer.engine import build as builder
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import (
    BuildError,
    Conflict,
    NotFound,
    OutOfSpace,
    RuntimeBackendError,
)
from rexcarcer.firewall import FirewallError
from rexcarcer.host import Host
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.rexfile.ast import Base, Copy, Rexfile, Run
from rexcarcer.runtime.fake import FakeRuntime
from tests.unit.fakes import fake_engine


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return fake_engine(tmp_path)


def rexfile(tmp_path: Path, *steps: Run | Copy, **kw: object) -> Rexfile:
    return Rexfile(base=Base("bb"), steps=steps, path=tmp_path / "app.rex", **kw)  # type: ignore[arg-type]


def test_up_is_idempotent_and_destroy_releases_everything(eng: Engine, tmp_path: Path) -> None:
    rf = rexfile(tmp_path, Run("echo hi"))
    info = jails.up(eng, rf, "app")
    assert info.state == "running" and info.address == "203.0.113.2/24"
    runtime = eng.host.runtime
    assert isinstance(runtime, FakeRuntime)
    assert len(runtime.builds) == 1
    jails.up(eng, rf, "app")
    assert len(runtime.builds) == 1  # cached, not run again
    root = eng.host.storage.mountpoint("jails/app")
    assert (
        (root / "etc/resolv.conf")
        .read_text()
        .endswith("search svc.rex.internal jail.rex.internal\n")
    )
    jails.destroy(eng, "app")
    assert eng.host.store.list("") == []
    assert not eng.host.storage.exists("jails/app")
    assert runtime.running == {}


def test_changed_step_rebuilds_from_that_step(eng: Engine, tmp_path: Path) -> None:
    base = bases.find_base(eng.host, "bb")
    a = builder.plan_build(eng.host, rexfile(tmp_path, Run("one"), Run("two"), Run("three")), base)
    builder.build(eng, rexfile(tmp_path, Run("one"), Run("two"), Run("three")), base)
    b = builder.plan_build(eng.host, rexfile(tmp_path, Run("one"), Run("TWO"), Run("three")), base)
    assert a[0].key == b[0].key and b[0].cached
    assert a[1].key != b[1].key and not b[1].cached
    assert a[2].key != b[2].key and not b[2].cached


def test_failing_step_rolls_back_the_jail(eng: Engine, tmp_path: Path) -> None:
    runtime = eng.host.runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.handler = lambda cmd: 3 if cmd == "boom" else 0
    with pytest.raises(BuildError, match="exit status 3"):
        jails.up(eng, rexfile(tmp_path, Run("ok"), Run("boom")), "app")
    assert eng.host.store.list("") == []
    assert [d.name for d in eng.host.storage.datasets("jails")] == []
    # the good first step stays cached; the failed one left nothing
    assert [d.name for d in eng.host.storage.datasets("images")] == [
        builder.plan_build(eng.host, rexfile(tmp_path, Run("ok")), bases.find_base(eng.host, "bb"))[
            0
        ].dataset
    ]


def test_start_failure_rolls_back_dataset_address_and_record(eng: Engine, tmp_path: Path) -> None:
    runtime = eng.host.runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.fail_start.add("app")
    with pytest.raises(RuntimeBackendError, match="rex up app failed"):
        jails.up(eng, rexfile(tmp_path), "app")
    assert eng.host.store.list("") == []
    assert not eng.host.storage.exists("jails/app")


def test_a_different_definition_is_an_update(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path, Run("a")), "app")
    jails.up(eng, rexfile(tmp_path, Run("b")), "app")
    rec = jails.record(eng, "app")
    assert rec is not None and rec.generation == 2


def test_copy_content_change_is_a_different_definition(eng: Engine, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("1")
    jails.up(eng, rexfile(tmp_path, Copy("f", "/f")), "app")
    (tmp_path / "f").write_text("2")
    jails.up(eng, rexfile(tmp_path, Copy("f", "/f")), "app")  # an update, not a no-op
    root = eng.host.storage.mountpoint("jails/app")
    assert (root / "f").read_text() == "2"
    rec = jails.record(eng, "app")
    assert rec is not None and rec.generation == 2


def test_missing_base_and_jail(eng: Engine, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="base 'nope'"):
        jails.up(eng, Rexfile(base=Base("nope"), path=tmp_path / "x.rex"), "x")
    assert eng.host.store.list("") == []
    with pytest.raises(NotFound):
        jails.destroy(eng, "ghost")


def test_killed_run_is_cleaned_by_the_next_up(eng: Engine, tmp_path: Path) -> None:
    from rexcarcer.state.base import put_json

    put_json(eng.host.store, "jails/app", {"name": "app", "status": "creating", "pid": 999999999,
                                      "pid_start": 1})  # fmt: skip
    eng.host.store.commit([], [])
    put_json(eng.host.store, "ipam/203.0.113.2", {"jail": "app", "host": "h1"})
    info = jails.up(eng, rexfile(tmp_path), "app")
    assert info.state == "running"
    assert info.address == "203.0.113.2/24"


def test_base_in_use_cannot_be_removed(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path, Run("x")), "app")
    with pytest.raises(Conflict, match="app"):
        bases.remove_base(
            eng.host, "bb", bases.jails_using(eng.host, bases.find_base(eng.host, "bb"))
        )
    jails.destroy(eng, "app")
    bases.remove_base(eng.host, "bb", bases.jails_using(eng.host, bases.find_base(eng.host, "bb")))
    assert eng.host.storage.datasets("images") == []
    assert eng.host.storage.datasets("bases") == []


def test_env_change_rebuilds_run_steps_but_not_copies() -> None:
    run, copy = Run("echo $X"), Copy("a", "/a")
    assert builder.step_key("p", run, "", (("X", "1"),)) != builder.step_key(
        "p", run, "", (("X", "2"),)
    )
    assert builder.step_key("p", copy, "d", (("X", "1"),)) == builder.step_key("p", copy, "d", ())
    assert builder.step_key("p", Copy("a /b", "/c"), "d") != builder.step_key(
        "p", Copy("a", "/b /c"), "d"
    )


def test_a_cached_step_is_asked_of_zfs_once(
    eng: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rf = rexfile(tmp_path, Run("echo one"), Run("echo two"))
    base = eng.bases.ensure(eng.host, rf.base)
    builder.build(eng, rf, base)
    asked: list[str] = []
    exists = eng.host.storage.exists
    monkeypatch.setattr(eng.host.storage, "exists", lambda n: asked.append(n) or exists(n))
    image = builder.build(eng, rf, base)
    # the plan's look, no second one under a lock nobody holds
    assert [a for a in asked if a.endswith("@img")] == [p.snapshot
                                                        for p in builder.plan_build(
                                                            eng.host, rf, base)]  # fmt: skip
    assert image.endswith("@img") and len(fake_runtime_builds(eng)) == 2


def test_a_step_planned_cached_while_its_builder_ran_is_looked_at_again(
    eng: Engine, tmp_path: Path
) -> None:
    import threading
    import time

    rf = rexfile(tmp_path, Run("echo one"))
    base = eng.bases.ensure(eng.host, rf.base)
    builder.build(eng, rf, base)
    [plan] = builder.plan_build(eng.host, rf, base)
    assert plan.cached
    held, release = threading.Event(), threading.Event()

    def failing_builder() -> None:
        # another run's builder: it made the snapshot, then failed and destroys it
        with eng.host.lock(f"image-{plan.key}"):
            held.set()
            release.wait(5)
            eng.host.storage.destroy(plan.dataset, recursive=True)

    other = threading.Thread(target=failing_builder)
    other.start()
    held.wait(5)
    threading.Timer(0.05, release.set).start()
    t0 = time.monotonic()
    builder.build(eng, rf, base)  # waits for the lock, finds no snapshot, builds
    other.join()
    assert time.monotonic() - t0 >= 0.04
    assert eng.host.storage.exists(plan.snapshot)
    assert len(fake_runtime_builds(eng)) == 2


def fake_runtime_builds(eng: Engine) -> list[object]:
    runtime = eng.host.runtime
    assert isinstance(runtime, FakeRuntime)
    return list(runtime.builds)


@dataclass(frozen=True)
class _Guard(NetworkPolicy):
    """The guard, counted, with whether the clone it runs beside was there yet."""

    calls: list[bool] = field(default_factory=list)
    fail: bool = False

    def guard(self, host: Host) -> None:
        self.calls.append(host.storage.exists("jails/app"))
        if self.fail:
            raise FirewallError("nft: cannot load the guard")


def test_a_new_jail_is_guarded_once_while_it_is_cloned(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    guard = _Guard()
    eng.policy = guard
    jails.up(eng, rexfile(tmp_path), "app")
    assert len(guard.calls) == 1  # the start did not guard again
    assert jails.is_running(eng, "app")
    jails.stop(eng, "app")
    jails.start(eng, "app")  # a start of its own guards
    assert len(guard.calls) == 2


def test_a_guard_that_fails_beside_the_clone_rolls_back_the_clone(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    eng.policy = _Guard(fail=True)
    with pytest.raises(FirewallError, match="rex up app failed: nft"):
        jails.up(eng, rexfile(tmp_path), "app")
    assert not eng.host.storage.exists("jails/app")  # cloned meanwhile, then rolled back
    assert eng.host.store.list("") == []


def test_a_clone_that_fails_beside_the_guard_is_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = fake_engine(tmp_path)
    guard = _Guard()
    eng.policy = guard

    def no_room(*args: object, **kw: object) -> None:
        raise OutOfSpace("out of space for dataset pool/rex/jails/app")

    monkeypatch.setattr(eng.host.storage, "clone_only", no_room)
    with pytest.raises(OutOfSpace, match="rex up app failed: out of space"):
        jails.up(eng, rexfile(tmp_path), "app")
    assert len(guard.calls) == 1 and eng.host.store.list("") == []
