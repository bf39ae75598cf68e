"""The engine on the in-memory drivers: the same lifecycle the integration
tests run for real, in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.engine import bases, jails
from rexcarcer.engine import build as builder
from rexcarcer.engine.host import Host
from rexcarcer.errors import BuildError, Conflict, NotFound, RuntimeBackendError
from rexcarcer.rexfile.ast import Base, Copy, Rexfile, Run
from rexcarcer.runtime.fake import FakeRuntime
from tests.unit.fakes import fake_host


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return fake_host(tmp_path)


def rexfile(tmp_path: Path, *steps: Run | Copy, **kw: object) -> Rexfile:
    return Rexfile(base=Base("bb"), steps=steps, path=tmp_path / "app.rex", **kw)  # type: ignore[arg-type]


def test_up_is_idempotent_and_destroy_releases_everything(host: Host, tmp_path: Path) -> None:
    rf = rexfile(tmp_path, Run("echo hi"))
    info = jails.up(host, rf, "app")
    assert info.state == "running" and info.address == "203.0.113.2/24"
    runtime = host.runtime
    assert isinstance(runtime, FakeRuntime)
    assert len(runtime.builds) == 1
    jails.up(host, rf, "app")
    assert len(runtime.builds) == 1  # cached, not run again
    root = host.storage.mountpoint("jails/app")
    assert (
        (root / "etc/resolv.conf")
        .read_text()
        .endswith("search svc.rex.internal jail.rex.internal\n")
    )
    jails.destroy(host, "app")
    assert host.store.list("") == []
    assert not host.storage.exists("jails/app")
    assert runtime.running == {}


def test_changed_step_rebuilds_from_that_step(host: Host, tmp_path: Path) -> None:
    base = bases.find_base(host, "bb")
    a = builder.plan_build(host, rexfile(tmp_path, Run("one"), Run("two"), Run("three")), base)
    builder.build(host, rexfile(tmp_path, Run("one"), Run("two"), Run("three")), base)
    b = builder.plan_build(host, rexfile(tmp_path, Run("one"), Run("TWO"), Run("three")), base)
    assert a[0].key == b[0].key and b[0].cached
    assert a[1].key != b[1].key and not b[1].cached
    assert a[2].key != b[2].key and not b[2].cached


def test_failing_step_rolls_back_the_jail(host: Host, tmp_path: Path) -> None:
    runtime = host.runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.handler = lambda cmd: 3 if cmd == "boom" else 0
    with pytest.raises(BuildError, match="exit status 3"):
        jails.up(host, rexfile(tmp_path, Run("ok"), Run("boom")), "app")
    assert host.store.list("") == []
    assert [d.name for d in host.storage.datasets("jails")] == []
    # the good first step stays cached; the failed one left nothing
    assert [d.name for d in host.storage.datasets("images")] == [
        builder.plan_build(host, rexfile(tmp_path, Run("ok")), bases.find_base(host, "bb"))[
            0
        ].dataset
    ]


def test_start_failure_rolls_back_dataset_address_and_record(host: Host, tmp_path: Path) -> None:
    runtime = host.runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.fail_start.add("app")
    with pytest.raises(RuntimeBackendError, match="rex up app failed"):
        jails.up(host, rexfile(tmp_path), "app")
    assert host.store.list("") == []
    assert not host.storage.exists("jails/app")


def test_different_definition_conflicts(host: Host, tmp_path: Path) -> None:
    jails.up(host, rexfile(tmp_path, Run("a")), "app")
    with pytest.raises(Conflict, match="different definition") as err:
        jails.up(host, rexfile(tmp_path, Run("b")), "app")
    assert err.value.hint and "rex destroy app" in err.value.hint


def test_copy_content_change_is_a_different_definition(host: Host, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("1")
    jails.up(host, rexfile(tmp_path, Copy("f", "/f")), "app")
    (tmp_path / "f").write_text("2")
    with pytest.raises(Conflict):
        jails.up(host, rexfile(tmp_path, Copy("f", "/f")), "app")


def test_missing_base_and_jail(host: Host, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="base 'nope'"):
        jails.up(host, Rexfile(base=Base("nope"), path=tmp_path / "x.rex"), "x")
    assert host.store.list("") == []
    with pytest.raises(NotFound):
        jails.destroy(host, "ghost")


def test_killed_run_is_cleaned_by_the_next_up(host: Host, tmp_path: Path) -> None:
    from rexcarcer.state.base import put_json

    put_json(host.store, "jails/app", {"name": "app", "status": "creating", "pid": 999999999,
                                      "pid_start": 1})  # fmt: skip
    host.store.commit([], [])
    put_json(host.store, "ipam/203.0.113.2", {"jail": "app", "host": "h1"})
    info = jails.up(host, rexfile(tmp_path), "app")
    assert info.state == "running"
    assert info.address == "203.0.113.2/24"


def test_base_in_use_cannot_be_removed(host: Host, tmp_path: Path) -> None:
    jails.up(host, rexfile(tmp_path, Run("x")), "app")
    with pytest.raises(Conflict, match="app"):
        bases.remove_base(host, "bb", jails.base_users(host, "bb"))
    jails.destroy(host, "app")
    bases.remove_base(host, "bb", jails.base_users(host, "bb"))
    assert host.storage.datasets("images") == []
    assert host.storage.datasets("bases") == []


def test_env_change_rebuilds_run_steps_but_not_copies() -> None:
    run, copy = Run("echo $X"), Copy("a", "/a")
    assert builder.step_key("p", run, "", (("X", "1"),)) != builder.step_key(
        "p", run, "", (("X", "2"),)
    )
    assert builder.step_key("p", copy, "d", (("X", "1"),)) == builder.step_key("p", copy, "d", ())
    assert builder.step_key("p", Copy("a /b", "/c"), "d") != builder.step_key(
        "p", Copy("a", "/b /c"), "d"
    )
