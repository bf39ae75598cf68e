"""The runner's child setup: cgroup.procs joined and rlimits set before exec.

Real processes, no root: a plain file stands in for cgroup.procs (the child
writes its own PID into it exactly as into the kernel's file), and lowering a
soft rlimit needs no privilege. The real cgroups are in
tests/integration/test_limits.py.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

import pytest

from rexcarcer.errors import CommandFailed
from rexcarcer.run import SETUP_FAILED, ScriptedRunner, SubprocessRunner


def _procs(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name / "cgroup.procs"
    path.parent.mkdir()
    path.write_text("")
    return path


def test_spawned_child_writes_its_own_pid_into_every_cgroup(tmp_path: Path) -> None:
    files = [_procs(tmp_path, "memory"), _procs(tmp_path, "pids")]
    pid = SubprocessRunner().spawn(["true"], cgroups=files)
    # waits for the exit; ECHILD when another test's child watcher reaped it first
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    assert [f.read_text() for f in files] == [str(pid), str(pid)]  # the child's, not ours


def test_run_child_joins_before_exec(tmp_path: Path) -> None:
    procs = _procs(tmp_path, "memory")
    # the command sees its own PID already written: it ran after the join
    done = SubprocessRunner().run(["sh", "-c", f'[ "$(cat {procs})" = "$$" ]'], cgroups=[procs])
    assert done.ok


def test_rlimits_are_set_in_the_child_only() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    done = SubprocessRunner().run(
        ["sh", "-c", "ulimit -Sn; ulimit -Hn"], rlimits={resource.RLIMIT_NOFILE: (64, 64)}
    )
    assert done.stdout.split() == ["64", "64"]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


@pytest.mark.parametrize("streaming", [False, True])
def test_missing_cgroup_fails_the_start_clearly(tmp_path: Path, streaming: bool) -> None:
    missing = tmp_path / "gone" / "cgroup.procs"
    lines: list[str] = []
    with pytest.raises(CommandFailed) as err:
        SubprocessRunner().run(
            ["touch", str(tmp_path / "ran")],
            cgroups=[missing],
            on_output=lines.append if streaming else None,
        )
    assert err.value.returncode == SETUP_FAILED
    assert f"join cgroup {missing}" in err.value.message
    assert "No such file or directory" in err.value.message
    assert not (tmp_path / "ran").exists()  # the command never ran


def test_an_rlimit_the_kernel_refuses_fails_spawn_clearly() -> None:
    # a soft limit above the hard one is refused for any process, root or not
    # (setrlimit(2): EINVAL "rlim->rlim_cur was greater than rlim->rlim_max")
    with pytest.raises(CommandFailed, match=r"setrlimit\(RLIMIT_NOFILE, 65, 64\)"):
        SubprocessRunner().spawn(["true"], rlimits={resource.RLIMIT_NOFILE: (65, 64)})


def test_failed_starts_leak_no_descriptors(tmp_path: Path) -> None:
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(CommandFailed):
            SubprocessRunner().run(["true"], cgroups=[tmp_path / "x" / "cgroup.procs"])
        SubprocessRunner().run(["true"], rlimits={resource.RLIMIT_NOFILE: (100, 100)})
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_die_with_parent_still_works_on_every_path() -> None:
    r = SubprocessRunner()
    assert r.run(["echo", "a"], die_with_parent=True).stdout == "a\n"
    lines: list[str] = []
    assert r.run(["echo", "b"], die_with_parent=True, on_output=lines.append).ok
    assert lines == ["b\n"]


def test_scripted_runner_records_cgroups_and_rlimits() -> None:
    r = ScriptedRunner()
    r.run(["true"])
    r.run(["sh"], cgroups=[Path("/cg/memory/rexcarcer/web/cgroup.procs")])
    pid = r.spawn(["init"], cgroups=["/cg/pids/x/cgroup.procs"], rlimits={7: (16, 16)})
    assert pid == 40001
    assert r.calls == [("true",), ("sh",), ("init",)]
    assert r.call_cgroups == [
        (),
        ("/cg/memory/rexcarcer/web/cgroup.procs",),
        ("/cg/pids/x/cgroup.procs",),
    ]
    assert r.call_rlimits == [{}, {}, {7: (16, 16)}]
