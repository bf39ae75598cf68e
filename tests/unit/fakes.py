"""A host on the in-memory drivers (fake storage, runtime and store), with a
base ``bb`` imported: what the engine and hook unit tests start from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.engine.hooks import JailHook
from rexcarcer.engine.host import Host, QuietProgress
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage


def fake_host(tmp_path: Path, hooks: Sequence[JailHook] = ()) -> Host:
    config = load_config(
        root=tmp_path / "state",
        environ={"REX_SUBNET": "203.0.113.0/24", **TESTING_ENV, "REX_HOST": "h1"},
    )
    h = Host(config, ScriptedRunner(), FakeStorage(tmp_path / "zfs"), FakeRuntime(), MemoryStore(),
             QuietProgress(), hooks=list(hooks))  # fmt: skip
    h.storage.ensure_layout()
    mnt = h.storage.create("bases/bb", props={"version": "1", "id": "base-id"})
    (mnt / "bin").mkdir(parents=True)
    (mnt / "bin" / "sh").write_text("#!")
    h.storage.snapshot("bases/bb@1")
    return h
