"""The jail service's contract, one test body for each door (borg-style): in
process, through this host's agent on its UNIX socket, through another host's
agent over mutual TLS. Every door runs the same fake engine, so what differs is
only the door; the bodies check the results and the exit codes of errors."""

from __future__ import annotations

import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rexcarcer.agent import remote
from rexcarcer.agent.local import LocalServer
from rexcarcer.cluster import cashare, model, tls
from rexcarcer.config import load_config
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict, NotFound, RexError, UpdateFailed
from rexcarcer.pki import ca
from rexcarcer.pki.layout import CaPaths
from rexcarcer.progress import Progress, QuietProgress
from rexcarcer.rexfile.parser import load
from rexcarcer.service.api import JailService
from rexcarcer.service.local import LocalService
from rexcarcer.service.remote import RemoteService
from rexcarcer.service.socket import SocketService
from rexcarcer.state.base import put_json
from tests.unit.fakes import fake_engine, fake_runtime

pytestmark = pytest.mark.unit


@dataclass
class Door:
    name: str
    svc: JailService
    engine: Engine


def _local(eng: Engine) -> LocalService:
    return LocalService(lambda: eng)


def _door(kind: str, tmp_path: Path) -> Iterator[Door]:
    eng = fake_engine(tmp_path / "host")
    if kind == "in-process":
        yield Door("in-process", _local(eng), eng)
    elif kind == "local-agent":
        yield from _socket_door(eng, tmp_path)
    else:
        yield from _remote_door(eng, tmp_path)


@pytest.fixture(params=["in-process", "local-agent", "remote-agent"])
def door(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Door]:
    yield from _door(request.param, tmp_path)


@pytest.fixture(params=["in-process", "local-agent"])
def full_door(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Door]:
    """The doors that answer ls, plan, build and logs too (another host's agent
    answers only the verbs about its own jails: the routed service asks it)."""
    yield from _door(request.param, tmp_path)


def _socket_door(eng: Engine, tmp_path: Path) -> Iterator[Door]:
    def service(progress: Progress) -> JailService:
        return _local(eng)

    path = Path("/tmp") / f"rex-contract-{tmp_path.name[-20:]}.sock"  # sun_path is short
    server = LocalServer(path, eng.host.platform, service, work=tmp_path / "contexts")
    thread = server.start()
    try:
        yield Door("local-agent", SocketService(path, QuietProgress()), eng)
    finally:
        server.stop()
        thread.join(timeout=5)


def _remote_door(eng: Engine, tmp_path: Path) -> Iterator[Door]:
    client = load_config(root=tmp_path / "client", environ={"REX_HOST": "h1"})
    server_config = load_config(root=tmp_path / "server", environ={"REX_HOST": "h2"})
    now = ca.utcnow()
    ca.install(CaPaths.under(client.root), ca.self_signed(ca.CaSettings(), now), now=now)
    shutil.copytree(client.root / "ca", server_config.root / "ca")
    store = eng.host.store
    cashare.publish(store, CaPaths.under(client.root), "h1")  # `rex cluster init`
    for h in ("h1", "h2"):
        put_json(store, model.host_key(h), {"name": h, "address": "127.0.0.1"})
    api = remote.Api(server_config, store, _local(eng))
    server = remote.serve(api, tls.ensure(server_config, "127.0.0.1"), "127.0.0.1", 0)
    put_json(store, model.alive_key("h2"), {"api": remote.url_for("127.0.0.1", server.port)})
    try:
        yield Door("remote-agent", RemoteService(client, store, "h2"), eng)
    finally:
        server.close()


def _rexfile(tmp_path: Path, body: str = "") -> Path:
    d = tmp_path / "ctx"
    d.mkdir(exist_ok=True)
    (d / "index.html").write_text("hi")
    rex = d / "app.rex"
    rex.write_text("BASE bb\nPROVISION RUN true\nPROVISION COPY index.html /www/index.html\n"
                   "SERVICE web PORT 80\n" + body)  # fmt: skip
    return rex


def _code(exc: pytest.ExceptionInfo[RexError]) -> int:
    return exc.value.exit_code


def test_lifecycle(door: Door, tmp_path: Path) -> None:
    svc = door.svc
    info = svc.up(load(_rexfile(tmp_path)), "app")
    assert (info.name, info.state, info.address) == ("app", "running", "203.0.113.2/24")
    assert [s.name for s in info.services] == ["web"]
    root = door.engine.host.storage.mountpoint("jails/app")
    assert (root / "www/index.html").read_text() == "hi"  # the COPY source travelled
    assert svc.up(load(_rexfile(tmp_path)), "app") == info  # idempotent
    assert svc.stop("app").state == "stopped"
    assert svc.start("app").state == "running"
    assert svc.restart("app").state == "running"
    svc.destroy("app")
    assert door.engine.host.store.list("jails/") == []


def test_exec_output_and_status(door: Door, tmp_path: Path) -> None:
    door.svc.up(load(_rexfile(tmp_path)), "app")
    fake_runtime(door.engine.host).handler = lambda cmd: 7 if cmd == "false x" else 0
    lines: list[str] = []
    assert door.svc.exec("app", ["false", "x"], interactive=False, sink=lines.append) == 7
    assert door.svc.exec("app", ["true"], interactive=False, sink=lines.append) == 0
    # a command killed by signal N exits 128+N, as sh(1) reports it (subprocess says -N)
    fake_runtime(door.engine.host).handler = lambda cmd: -signal.SIGSEGV
    assert door.svc.exec("app", ["sh", "-c", "kill -SEGV $$"], interactive=False,
                         sink=lines.append) == 128 + signal.SIGSEGV  # fmt: skip


def test_errors_keep_their_exit_codes(door: Door, tmp_path: Path) -> None:
    svc = door.svc
    with pytest.raises(RexError) as err:
        svc.start("ghost")
    assert _code(err) == NotFound.exit_code and "no jail named 'ghost'" in err.value.message
    svc.up(load(_rexfile(tmp_path, "IP 203.0.113.9/24\n")), "app")
    with pytest.raises(RexError) as err:
        svc.up(load(_rexfile(tmp_path, "IP 203.0.113.9/24\n")), "other")
    assert _code(err) == Conflict.exit_code and "already used by jail 'app'" in err.value.message
    assert err.value.hint and "pick another IP" in err.value.hint
    fake_runtime(door.engine.host).fail_next = 1  # an update that does not start: rolled back
    with pytest.raises(RexError) as err:
        svc.up(load(_rexfile(tmp_path, "IP 203.0.113.9/24\nENV X=1\n")), "app")
    assert _code(err) == UpdateFailed.exit_code and "rolled back to generation 1" in str(err.value)
    with pytest.raises(RexError) as err:
        svc.destroy("Bad_Name")
    assert _code(err) == 2


def test_listing_planning_and_logs(full_door: Door, tmp_path: Path) -> None:
    door = full_door
    svc = door.svc
    dataset = door.engine.host.config.dataset
    plan = svc.plan(load(_rexfile(tmp_path)), "app")
    # the guard is not loaded yet: loaded before the first step that runs
    kinds = ["firewall", "build", "build", "address", "clone", "files", "start"]
    assert [a.kind for a in plan] == kinds
    assert (
        plan[4]
        .lines()[0]
        .startswith(f"zfs clone -o rexcarcer:jail=app -o rexcarcer:generation=1 {dataset}/images/")
    )
    svc.up(load(_rexfile(tmp_path)), "app")
    assert [i.name for i in svc.ls()] == ["app"]
    assert svc.plan(load(_rexfile(tmp_path)), "app")[0].kind == "none"
    assert svc.build(load(_rexfile(tmp_path))).startswith(f"{dataset}/images/")
    from rexcarcer.logs.service import paths_for

    log = paths_for(door.engine.host.config).jail_log("app")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("one\ntwo\nthree\n")
    lines: list[str] = []
    svc.logs("app", lines=2, follow=False, sink=lines.append)
    assert lines == ["two\n", "three\n"]


def test_two_ups_of_one_jail_at_once(door: Door, tmp_path: Path) -> None:
    """Two `rex up`s of one jail through the same door: both succeed, or the loser
    is told the jail is being created (a conflict), never anything else."""
    results: list[object] = []
    rexfile = _rexfile(tmp_path)

    def up() -> None:
        try:
            results.append(door.svc.up(load(rexfile), "app").state)
        except RexError as exc:
            results.append(exc.exit_code)

    threads = [threading.Thread(target=up) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(map(str, results)) in (["running", "running"], ["12", "running"])
