"""A host on the in-memory drivers (fake storage, platform and store), with a
base ``bb`` imported: what the engine, service and hook unit tests start from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from rexcarcer.base.source import Bases
from rexcarcer.cli.context import Ctx
from rexcarcer.cli.main import build_cli
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.dns.hook import DnsHook
from rexcarcer.dns.unbound import FakeUnbound
from rexcarcer.engine.base import Engine, JailHook
from rexcarcer.host import Host
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.pki.hook import IdentityHook
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.progress import QuietProgress
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.service.api import JailService
from rexcarcer.service.local import LocalService
from rexcarcer.state.base import Store
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage


def fake_host(
    tmp_path: Path, *, name: str = "h1", subnet: str = "203.0.113.0/24",
    store: Store | None = None, etcd: bool = False,
) -> Host:  # fmt: skip
    """``etcd``: a cluster member (its store is ``store``, shared with the other
    fake hosts of the test; no etcd is contacted)."""
    cluster = {"REX_ETCD": "http://192.0.2.1:2379"} if etcd else {}
    config = load_config(
        root=tmp_path / "state",
        environ={"REX_SUBNET": subnet, **TESTING_ENV, "REX_HOST": name, **cluster},
    )
    runner = ScriptedRunner()
    storage = FakeStorage(tmp_path / "zfs", config.dataset)
    h = Host(config, runner, storage, FakePlatform(runner, config), store or MemoryStore(),
             QuietProgress())  # fmt: skip
    h.storage.ensure_layout()
    mnt = h.storage.create("bases/bb", props={"version": "1", "id": "base-id"})
    (mnt / "bin").mkdir(parents=True)
    (mnt / "bin" / "sh").write_text("#!")
    h.storage.snapshot("bases/bb@1")
    return h


def fake_engine(tmp_path: Path, hooks: Sequence[JailHook] = ()) -> Engine:
    return Engine(fake_host(tmp_path), Bases(), list(hooks), policy=NetworkPolicy())


def fake_runtime(host: Host) -> FakeRuntime:
    runtime = host.runtime
    assert isinstance(runtime, FakeRuntime)
    return runtime


# -- the CLI on the fakes ---------------------------------------------------------------


class FakeCtx(Ctx):
    """The CLI's context on the in-memory drivers."""

    eng: Engine

    def host(self) -> Host:
        return self.eng.host

    def engine(self) -> Engine:
        return self.eng

    def service(self) -> JailService:
        return LocalService(lambda: self.eng)


def fake_ctx(tmp_path: Path) -> FakeCtx:
    """The CLI's context on a fake engine with the DNS (fake unbound) and identity
    hooks, and ``web/web.rex`` (with a COPY source) beside the state directory."""
    eng = fake_engine(tmp_path, [DnsHook(FakeUnbound()), IdentityHook()])
    c = FakeCtx(root=eng.host.config.root, config_file=None, output="json", debug=False,
                _config=eng.host.config)  # fmt: skip
    c.eng = eng
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<p>hi</p>\n")
    (web / "web.rex").write_text(
        "BASE bb\nPROVISION COPY index.html /var/www/index.html\nPROVISION RUN echo built\n"
        "ENV GREETING=hello\nSERVICE web PORT 80\nSERVICE dns PORT 53 PROTO udp\n"
        "HOSTNAME web.example.com\n"
    )
    return c


def rex(ctx: FakeCtx, *args: str, status: tuple[int, ...] = (0,)) -> Any:
    """``rex -o json ARGS`` on the fakes; its stdout as JSON."""
    cli = build_cli()
    group: click.Command = cli.commands[args[0]]
    done = CliRunner().invoke(group, list(args[1:]), obj=ctx, catch_exceptions=False)
    assert done.exit_code in status, done.output
    return json.loads(done.stdout)


def web(ctx: FakeCtx) -> str:
    return str(ctx.config.root.parent / "web" / "web.rex")
