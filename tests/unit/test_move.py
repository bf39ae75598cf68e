"""rex move on the in-memory drivers: two hosts sharing one store, the target
reached in process (the agents' API carries the same calls in
tests/cluster/test_move.py). The jail arrives with its data, its record names
the new host and a new address; any failure before it runs there leaves it
running where it was and nothing on the target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from rexcarcer.base.source import Bases
from rexcarcer.cluster import AgentApiError, ClusterError, model
from rexcarcer.engine import carry, jails, moving
from rexcarcer.engine.base import Engine
from rexcarcer.errors import (
    AddressError,
    MoveFailed,
    NotFound,
    RexError,
    StorageError,
)
from rexcarcer.model.jail import JailInfo
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.rexfile.parser import parse
from rexcarcer.service.local import LocalService
from rexcarcer.state import records
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore
from tests.unit.fakes import fake_host, fake_runtime

REX = "BASE bb\nVOLUME data /srv/data\n"


class DirectTarget:
    """The target's service called in process, as its agent would call it."""

    def __init__(self, svc: LocalService, caller: str, host: str) -> None:
        self.svc, self.caller, self.host = svc, caller, host
        self.on_commit: Callable[[], None] | None = None

    def begin(self, name: str) -> None:
        self.svc.incoming_begin(self.caller, name)

    def send(self, name: str, part: str, stream: IO[bytes], *, since: str | None) -> None:
        self.svc.incoming_part(self.caller, name, part, since).receive(stream)

    def commit(self, name: str, *, label: str, osrelease: str | None, revision: int) -> JailInfo:
        info = self.svc.incoming_commit(self.caller, name, label, osrelease, revision)
        if self.on_commit is not None:
            self.on_commit()
        return info

    def abort(self, name: str) -> None:
        self.svc.incoming_abort(self.caller, name)


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.store = MemoryStore()
        self.h1 = self._host(tmp_path, "h1", "203.0.113.0/26")
        self.h2 = self._host(tmp_path, "h2", "203.0.113.64/26")
        self.svc2 = LocalService(lambda: self.h2)
        self.target = DirectTarget(self.svc2, "h1", "h2")
        self.svc1 = LocalService(lambda: self.h1, targets=lambda eng, to: self.target)

    def _host(self, tmp_path: Path, name: str, subnet: str) -> Engine:
        host = fake_host(tmp_path / name, name=name, subnet=subnet, store=self.store, etcd=True)
        put_json(self.store, model.host_key(name), {"name": name, "address": "198.51.100.1",
                                                    "subnet": subnet})  # fmt: skip
        put_json(self.store, model.alive_key(name), {"api": "https://198.51.100.1:7443"})
        return Engine(host, Bases(), [], policy=NetworkPolicy())


@pytest.fixture
def cl(tmp_path: Path) -> Cluster:
    c = Cluster(tmp_path)
    jails.up(c.h1, parse(REX, path=tmp_path / "web.rex"), "web")
    (c.h1.host.storage.mountpoint("volumes/web.data") / "rows").write_text("precious")
    (c.h1.host.storage.mountpoint("jails/web") / "motd").write_text("hello")
    return c


def _nothing_on(eng: Engine) -> None:
    assert not eng.host.storage.datasets("jails")
    assert not eng.host.storage.datasets("volumes")
    assert not fake_runtime(eng.host).running


def test_a_jail_moves_with_its_data(cl: Cluster) -> None:
    old = jails.record(cl.h1, "web")
    assert old is not None and str(old.address) == "203.0.113.2/26"
    info = cl.svc1.move("web", "h2")
    assert (info.name, info.host, info.state) == ("web", "h2", "running")
    assert info.address == "203.0.113.66/26"  # an address of h2's subnet
    rec = records.get_jail(cl.store, "web")
    assert rec is not None and rec.host == "h2" and str(rec.address) == "203.0.113.66/26"
    assert "web" in fake_runtime(cl.h2.host).running
    h2 = cl.h2.host.storage
    assert (h2.mountpoint("volumes/web.data") / "rows").read_text() == "precious"
    assert (h2.mountpoint("jails/web") / "motd").read_text() == "hello"
    assert h2.get_props("volumes/web.data")["path"] == "/srv/data"
    assert not [s for d in ("jails/web", "volumes/web.data") for s in h2.snapshots(d)]
    _nothing_on(cl.h1)
    from rexcarcer import ipam

    assert ipam.taken(cl.store) == {"203.0.113.66": "web"}  # the old address was released
    # and it is h2's jail now: lifecycle verbs run there, the same service moves it back
    cl.target = DirectTarget(LocalService(lambda: cl.h1), "h2", "h1")
    back = LocalService(lambda: cl.h2, targets=lambda eng, to: cl.target).move("web", "h1")
    assert back.host == "h1" and (cl.h1.host.storage.mountpoint("volumes/web.data") / "rows"
                                  ).read_text() == "precious"  # fmt: skip


def test_a_move_killed_after_the_commit_is_finished_by_the_agent(
    cl: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source killed once the jail runs on h2, before it removed its own
    copy: h1 still claims the old address; h1's agent (jailsync) removes the
    rest, and the same `rex move` again has nothing to do."""
    from rexcarcer import ipam
    from rexcarcer.agent.jailsync import JailSync

    release = moving.release

    def killed(*args: object) -> None:
        raise SystemExit(-9)

    monkeypatch.setattr(moving, "release", killed)
    with pytest.raises(SystemExit):
        cl.svc1.move("web", "h2")
    monkeypatch.setattr(moving, "release", release)
    assert records.get_jail(cl.store, "web").host == "h2"  # type: ignore[union-attr]
    assert ipam.taken(cl.store) == {"203.0.113.2": "web", "203.0.113.66": "web"}
    assert moving.unfinished(cl.store, "h2") == {}
    assert list(moving.unfinished(cl.store, "h1")) == ["web"]
    # a move in progress holds the jail's lock: the agent leaves it alone
    with cl.h1.host.lock(jails.lock_name("web")):
        assert JailSync(cl.h1, "h1").sync(records.list_jails(cl.store)) == []
    assert JailSync(cl.h1, "h1").sync(records.list_jails(cl.store)) == [("web", "released")]
    _nothing_on(cl.h1)
    assert ipam.taken(cl.store) == {"203.0.113.66": "web"}
    assert moving.unfinished(cl.store, "h1") == {}
    again = moving.move(cl.h2, "web", DirectTarget(cl.svc2, "h1", "h2"))
    assert (again.host, again.state) == ("h2", "running")
    h2 = cl.h2.host.storage
    assert (h2.mountpoint("volumes/web.data") / "rows").read_text() == "precious"


def test_a_failed_start_there_leaves_it_running_here(cl: Cluster) -> None:
    fake_runtime(cl.h2.host).fail_next = 1
    with pytest.raises(MoveFailed) as err:
        cl.svc1.move("web", "h2")
    assert err.value.exit_code == 54
    assert "it runs on h1" in err.value.message and "failed to start" in err.value.message
    rec = records.get_jail(cl.store, "web")
    assert rec is not None and rec.host == "h1" and str(rec.address) == "203.0.113.2/26"
    assert "web" in fake_runtime(cl.h1.host).running
    _nothing_on(cl.h2)
    assert (cl.h1.host.storage.mountpoint("volumes/web.data") / "rows").read_text() == "precious"
    assert not cl.h1.host.storage.snapshots("jails/web")
    from rexcarcer import ipam

    assert ipam.taken(cl.store) == {"203.0.113.2": "web"}


def test_a_lost_answer_after_the_commit_is_a_move(cl: Cluster) -> None:
    def lost() -> None:
        raise AgentApiError("cannot reach host h2's agent: connection reset")

    cl.target.on_commit = lost
    info = cl.svc1.move("web", "h2")
    assert info.host == "h2"
    assert "web" in fake_runtime(cl.h2.host).running
    _nothing_on(cl.h1)


def test_a_commit_that_never_arrived_is_fenced_off(cl: Cluster) -> None:
    """The source cannot tell: it rewrites its record, so that a commit arriving
    late fails its compare-and-swap and undoes itself."""
    late: list[Callable[[], JailInfo]] = []

    def never(name: str, *, label: str, osrelease: str | None, revision: int) -> JailInfo:
        def commit() -> JailInfo:
            return DirectTarget.commit(cl.target, name, label=label, osrelease=osrelease,
                                       revision=revision)  # fmt: skip

        late.append(commit)
        raise AgentApiError("timed out")

    cl.target.commit = never  # type: ignore[method-assign]
    abort = cl.target.abort
    cl.target.abort = lambda name: None  # type: ignore[method-assign]  # the abort is lost too
    with pytest.raises(MoveFailed, match="timed out; it runs on h1"):
        cl.svc1.move("web", "h2")
    with pytest.raises(RexError, match="changed on h1 during the move"):
        late[0]()
    rec = records.get_jail(cl.store, "web")
    assert rec is not None and rec.host == "h1" and "web" in fake_runtime(cl.h1.host).running
    assert "web" not in fake_runtime(cl.h2.host).running
    abort("web")
    _nothing_on(cl.h2)


def test_bad_targets_change_nothing(cl: Cluster, tmp_path: Path) -> None:
    # to the host it is on: nothing to do (a move run again after it happened)
    here = moving.move(cl.h1, "web", DirectTarget(cl.svc2, "h1", "h1"))
    assert (here.host, here.state, here.address) == ("h1", "running", "203.0.113.2/26")
    assert not cl.h2.host.storage.datasets("jails")
    with pytest.raises(NotFound, match="no jail named 'nope'"):
        cl.svc1.move("nope", "h2")
    cl.svc1.targets = None  # the real door: checks the host before any connection
    with pytest.raises(NotFound, match="no host 'h9' in the cluster"):
        cl.svc1.move("web", "h9")
    from rexcarcer.state.base import Delete

    cl.store.commit([], [Delete(model.alive_key("h2"))])
    with pytest.raises(ClusterError, match="host 'h2' is down"):
        cl.svc1.move("web", "h2")
    rec = records.get_jail(cl.store, "web")
    assert rec is not None and rec.host == "h1" and "web" in fake_runtime(cl.h1.host).running


def test_a_fixed_ip_moves_only_where_its_range_is(cl: Cluster, tmp_path: Path) -> None:
    jails.up(cl.h1, parse("BASE bb\nIP 203.0.113.9/26\n", path=tmp_path / "pin.rex"), "pin")
    with pytest.raises(AddressError, match="host h2 declares no range holding it"):
        cl.svc1.move("pin", "h2")
    assert records.get_jail(cl.store, "pin").host == "h1"  # type: ignore[union-attr]
    assert not cl.h2.host.storage.datasets("jails")


def test_only_its_host_moves_a_jail(cl: Cluster) -> None:
    with pytest.raises(RexError, match="only its host moves it"):
        cl.svc2.incoming_begin("h3", "web")
    with pytest.raises(RexError, match="only its host moves it"):
        cl.svc2.incoming_part("h3", "web", "root", None)
    with pytest.raises(RexError, match="no part 'nope'"):
        cl.svc2.incoming_part("h1", "web", "nope", None)
    assert moving.LIVE != moving.FINAL


def test_what_cannot_be_removed_after_a_move_is_swept_by_the_next(
    cl: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jail runs on h2 once its record is taken: a dataset h1 cannot destroy
    then (zfs-fuse: "dataset is busy") does not fail the move; it stays marked,
    hidden from rex volume ls, and the move back sweeps it."""
    h1 = cl.h1.host.storage
    destroy = h1.destroy

    def busy(name: str, **kw: bool) -> None:
        if name in ("jails/web", "volumes/web.data"):
            raise StorageError(f"cannot destroy '{name}': dataset is busy")
        destroy(name, **kw)

    monkeypatch.setattr(h1, "destroy", busy)
    monkeypatch.setattr(carry, "DISCARD_SECONDS", 0.0)
    info = cl.svc1.move("web", "h2")
    assert info.host == "h2" and records.get_jail(cl.store, "web").host == "h2"  # type: ignore[union-attr]
    assert h1.get_props("jails/web")["moved"] == "h2"
    assert h1.get_props("volumes/web.data")["moved"] == "h2"
    assert not [v for v in cl.svc1.volumes() if v.jail == "web"]
    monkeypatch.setattr(h1, "destroy", destroy)
    cl.target = DirectTarget(LocalService(lambda: cl.h1), "h2", "h1")
    back = LocalService(lambda: cl.h2, targets=lambda eng, to: cl.target).move("web", "h1")
    assert back.host == "h1" and "moved" not in h1.get_props("jails/web")
    assert (h1.mountpoint("volumes/web.data") / "rows").read_text() == "precious"
