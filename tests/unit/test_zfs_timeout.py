"""ZFS that stops answering: every zfs command has a time limit, a command past
it is killed (rex does not wait for a child that cannot die yet), and the step
fails with ZfsUnresponsive (exit 85); `rex up` rolls back all it can and leaves
its record for the agent to finish; `rex destroy` changes nothing. The real
daemon stopped with SIGSTOP: tests/integration/test_faults_zfs_stall.py."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from rexcarcer import ipam
from rexcarcer.config import load_config
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import CommandFailed, ConfigError, ZfsUnresponsive
from rexcarcer.model.jail import Status
from rexcarcer.run import Completed, ScriptedRunner, SubprocessRunner, abandon
from rexcarcer.storage.fake import FakeStorage
from rexcarcer.storage.zfs import Capabilities, ZfsStorage
from tests.unit.fakes import fake_engine
from tests.unit.test_engine import rexfile


def test_a_command_past_its_timeout_is_killed_and_reported() -> None:
    t0 = time.monotonic()
    with pytest.raises(CommandFailed) as err:
        SubprocessRunner().run(["sleep", "30"], timeout=0.3)
    assert err.value.timed_out and "timed out after 0.3 s" in err.value.message
    assert time.monotonic() - t0 < 5
    done = SubprocessRunner().run(["sh", "-c", "cat; echo err >&2"], input="in", timeout=5)
    assert (done.stdout, done.stderr, done.returncode) == ("in", "err\n", 0)


class _Unkillable:
    """A child in uninterruptible sleep: SIGKILL is pending, wait() does not return."""

    def __init__(self) -> None:
        self.pid, self.stdin, self.stdout, self.stderr = 4242, None, None, None
        self.killed = False
        self.released = threading.Event()

    def kill(self) -> None:
        self.killed = True

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None:
            raise subprocess.TimeoutExpired(["zfs"], timeout)
        self.released.wait()
        return -9


def test_a_child_that_cannot_die_yet_is_left_to_a_reaper() -> None:
    child = _Unkillable()
    t0 = time.monotonic()
    abandon(child, ("zfs", "list"), grace=0.1)  # type: ignore[arg-type]
    assert child.killed and time.monotonic() - t0 < 2
    reaper = [t for t in threading.enumerate() if t.name == "reap-4242"]
    assert len(reaper) == 1 and reaper[0].daemon
    child.released.set()  # the daemon answered: the child dies and is reaped
    reaper[0].join(timeout=5)
    assert not reaper[0].is_alive()


def _stalled(argv: tuple[str, ...]) -> Completed:
    raise CommandFailed(argv, -1, "timed out after 3 s", timed_out=True)


class _TimingRunner(ScriptedRunner):
    """Records the timeout each command was given."""

    timeouts: list[float | None]

    def run(self, argv: Sequence[str], **kw: object) -> Completed:  # type: ignore[override]
        self.timeouts = [*getattr(self, "timeouts", []), kw.get("timeout")]  # type: ignore[list-item]
        return super().run(argv, **kw)  # type: ignore[arg-type]


def test_every_zfs_command_has_the_timeout_and_a_stall_is_exit_85() -> None:
    runner = _TimingRunner()
    storage = ZfsStorage(runner, "tank/rex", caps=Capabilities(openzfs=False), timeout=3)
    storage.exists("jails/web")
    storage.set_props("jails/web", {"a": "1", "b": ""})
    storage.destroy("jails/web")
    assert runner.timeouts and set(runner.timeouts) == {3}
    runner.on(["zfs", "clone"], _stalled)
    with pytest.raises(ZfsUnresponsive) as err:
        storage.clone("images/k@img", "jails/web")
    assert err.value.exit_code == 85
    assert "the ZFS daemon is not answering: `zfs clone" in err.value.message
    assert "did not finish in 3 s" in err.value.message
    assert err.value.hint is not None and "zpool status" in err.value.hint
    # no `zfs list` to see whether the clone exists: that would wait as long again
    assert runner.calls[-1][:2] == ("zfs", "clone")
    stalled = ScriptedRunner()
    stalled.on(["zfs"], _stalled)
    with pytest.raises(ZfsUnresponsive):
        ZfsStorage(stalled, "tank/rex", timeout=3).ensure_layout()  # `zfs version` too


def test_the_zfs_fuse_lock_is_waited_for_a_bounded_time(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / "zfs-fuse.lock"
    storage = ZfsStorage(ScriptedRunner(), "tank/rex", serial_lock=lock, timeout=0.02,
                         caps=Capabilities(openzfs=False))  # fmt: skip
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t0 = time.monotonic()
        with pytest.raises(ZfsUnresponsive, match="held by another zfs command"):
            storage.create("jails/web")
        assert time.monotonic() - t0 < 3


def test_zfs_timeout_setting() -> None:
    env = {"REX_RUNTIME": "fake", "REX_TESTING": "1"}
    assert load_config(environ=env).zfs_timeout == 30.0
    assert load_config(environ={**env, "REX_ZFS_TIMEOUT": "2.5"}).zfs_timeout == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError):
            load_config(environ={**env, "REX_ZFS_TIMEOUT": bad})


class StallingStorage(FakeStorage):
    """The fake pool with a daemon that stops answering on demand."""

    stalled = False
    stall_at_clone = False

    def _check(self, argv: Sequence[str]) -> None:
        if self.stalled:
            raise ZfsUnresponsive(f"the ZFS daemon is not answering: `{' '.join(argv)}`")

    def clone(self, snapshot: str, name: str, **kw: object) -> Path:  # type: ignore[override]
        if self.stall_at_clone and name.startswith("jails/"):
            self.stalled = True  # the daemon stops while rex up clones
        self._check(["zfs", "clone", name])
        return super().clone(snapshot, name, **kw)  # type: ignore[arg-type]

    def exists(self, name: str) -> bool:
        self._check(["zfs", "list", name])
        return super().exists(name)

    def destroy(self, name: str, **kw: object) -> None:  # type: ignore[override]
        self._check(["zfs", "destroy", name])
        super().destroy(name, **kw)  # type: ignore[arg-type]


@pytest.fixture
def stalling(tmp_path: Path) -> Engine:
    eng = fake_engine(tmp_path)
    assert type(eng.host.storage) is FakeStorage
    eng.host.storage.__class__ = StallingStorage  # the same pool, with its base imported
    return eng


def test_rex_up_stalled_at_clone_leaves_a_record_for_the_agent(
    stalling: Engine, tmp_path: Path
) -> None:
    storage = stalling.host.storage
    assert isinstance(storage, StallingStorage)
    storage.stall_at_clone = True
    with pytest.raises(ZfsUnresponsive) as err:
        jails.up(stalling, rexfile(tmp_path), "web")
    assert err.value.message.startswith("rex up web failed: the ZFS daemon is not answering")
    assert "the agent's next tick" in err.value.message
    rec = jails.record(stalling, "web")
    # rolled back outside ZFS: no address, not running; the record is the note of
    # what ZFS may still hold, owned by no run
    assert rec is not None and rec.status is Status.CREATING and rec.pid is None
    assert ipam.taken(stalling.host.store) == {}
    assert stalling.host.runtime.status(["web"])["web"].state != "running"
    assert jails.abandoned(stalling, rec)
    # the daemon answers again: the agent's tick (recover) removes the rest
    storage.stalled = storage.stall_at_clone = False
    assert jails.recover(stalling, "web")
    assert jails.record(stalling, "web") is None
    assert not storage.exists("jails/web")
    assert not jails.recover(stalling, "web")
    # and the same rex up works
    assert jails.up(stalling, rexfile(tmp_path), "web").state == "running"


def test_rex_destroy_on_a_stalled_daemon_changes_nothing(stalling: Engine, tmp_path: Path) -> None:
    jails.up(stalling, rexfile(tmp_path), "db")
    storage = stalling.host.storage
    assert isinstance(storage, StallingStorage)
    storage.stalled = True
    with pytest.raises(ZfsUnresponsive):
        jails.destroy(stalling, "db")
    storage.stalled = False
    assert jails.is_running(stalling, "db")
    rec = jails.record(stalling, "db")
    assert rec is not None and rec.status is Status.READY
    assert "db" in ipam.taken(stalling.host.store).values()
    jails.destroy(stalling, "db")
    assert jails.record(stalling, "db") is None
