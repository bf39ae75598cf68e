"""A host on the in-memory drivers (fake storage, platform and store), with a
base ``bb`` imported: what the engine, service and hook unit tests start from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rexcarcer.base.source import Bases
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.engine.base import Engine, JailHook
from rexcarcer.host import Host
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.progress import QuietProgress
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage


def fake_host(tmp_path: Path) -> Host:
    config = load_config(
        root=tmp_path / "state",
        environ={"REX_SUBNET": "203.0.113.0/24", **TESTING_ENV, "REX_HOST": "h1"},
    )
    runner = ScriptedRunner()
    storage = FakeStorage(tmp_path / "zfs", config.dataset)
    h = Host(config, runner, storage, FakePlatform(runner, config), MemoryStore(),
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
