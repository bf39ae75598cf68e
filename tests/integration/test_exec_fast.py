"""``rex exec NAME -- CMD`` as root goes straight into the jail (runtime/direct.py):
the command is a child of the ``rex`` process itself, with the same environment,
status and root as the engine's path (``rex --debug exec``, which the fast door
leaves to the engine), inside the jail's cgroups when it has some."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from pathlib import Path

from rexcarcer.runtime import direct, procfs
from tests.capability import missing
from tests.integration.conftest import Rex, copy_example, wait_until


def _up(rex: Rex, tmp_path: Path, name: str = "hello") -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex", "--name", name)


def test_exec_runs_the_command_as_a_child_of_rex_itself(rex: Rex, tmp_path: Path) -> None:
    _up(rex, tmp_path)
    proc = rex.popen("exec", "hello", "--", "sleep", "30")
    try:
        # rex.argv is nsenter --net ... -- python -m rexcarcer: nsenter execs python
        def sleeper() -> int | None:
            for kid in procfs.children(proc.pid):
                if Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep":
                    return kid
            return None

        kid = wait_until(sleeper, "sleep 30 as a child of rex")
        # no second interpreter (jailenter.py under the runner) between them
        assert procfs.stat(kid) is not None
        # in the jail's root (the link reads "/" from another mount namespace)
        env = Path(f"/proc/{kid}/root/etc/rexcarcer/env").read_text()
        assert env == "GREETING='hello'\n"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    # SIGTERM reached the command, whose death is reported as a shell does
    assert proc.returncode == 128 + 15, (out, err)


def test_the_fast_and_the_engine_path_give_the_same_command(rex: Rex, tmp_path: Path) -> None:
    _up(rex, tmp_path)
    for argv in (
        ["sh", "-c", "env | sort"],
        ["sh", "-c", "hostname; pwd; id -u; cat /etc/rexcarcer/env"],
        ["sh", "-c", "grep Cap /proc/self/status"],
        ["sh", "-c", "echo out; echo err >&2; exit 3"],
        ["no-such-command"],
    ):
        fast = rex.run("exec", "hello", "--", *argv, check=False)
        slow = rex.run("--debug", "exec", "hello", "--", *argv, check=False)
        assert (fast.returncode, fast.stdout) == (slow.returncode, slow.stdout), argv
        if argv[0] != "no-such-command":
            assert fast.stderr == slow.stderr.split("\n", 1)[-1] or fast.stderr in slow.stderr
    assert (
        rex.run("exec", "hello", "--", "sh", "-c", "kill -SEGV $$", check=False).returncode == 139
    )


def test_a_stopped_or_unknown_jail_gets_the_engines_errors(rex: Rex, tmp_path: Path) -> None:
    _up(rex, tmp_path)
    assert (rex.root / "run" / "hello.exec").stat().st_mode & 0o777 == 0o600
    rex.run("stop", "hello")
    assert not (rex.root / "run" / "hello.exec").exists()
    stopped = rex.run("exec", "hello", "--", "true", check=False)
    assert stopped.returncode != 0 and "not running" in stopped.stderr
    unknown = rex.run("exec", "nosuch", "--", "true", check=False)
    assert unknown.returncode == 11 and "no jail" in unknown.stderr, unknown
    # run files that name a process which is not the init (a reused PID) are not entered
    rex.run("start", "hello")
    run, fast = rex.root / "run" / "hello.json", rex.root / "run" / "hello.exec"
    saved, saved_fast = run.read_text(), fast.read_bytes()
    info = json.loads(saved)
    run.write_text(json.dumps({**info, "init_start": info["init_start"] + 1}))
    found = direct.parse_exec(saved_fast)
    assert found is not None and found[:2] == (info["init_pid"], info["init_start"])
    fast.write_bytes(direct.exec_record(found[0], found[1] + 1, found[2], found[3]))
    try:
        gone = rex.run("exec", "hello", "--", "true", check=False)
    finally:  # else rex destroy, which trusts the run file as exec does, leaves the init
        run.write_text(saved)
        fast.write_bytes(saved_fast)
    assert gone.returncode != 0 and "not running" in gone.stderr


def test_exec_joins_the_jails_cgroups_first(rex: Rex, tmp_path: Path) -> None:
    name = f"cg{uuid.uuid4().hex[:8]}"
    _up(rex, tmp_path, name)
    group = f"/rexcarcer/rex-{rex.token}/{name}"
    info = json.loads((rex.root / "run" / f"{name}.json").read_text())
    init = Path(f"/proc/{info['init_pid']}/cgroup").read_text().splitlines()
    if not any(line.endswith(group) for line in init):
        missing("cgroup controllers")
    tag = f"sleep {700 + uuid.uuid4().int % 99}"
    proc = subprocess.Popen(rex.argv("exec", name, "--", *tag.split()), env=rex.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:

        def running() -> list[int]:
            found = []
            for d in Path("/proc").iterdir():
                with contextlib.suppress(OSError):
                    if d.name.isdigit() and (d / "cmdline").read_bytes() == \
                            tag.replace(" ", "\0").encode() + b"\0":  # fmt: skip
                        found.append(int(d.name))
            return found

        deadline = time.monotonic() + 30
        while not running() and time.monotonic() < deadline:
            time.sleep(0.05)
        [pid] = running()
        # the command is rex's own child: the direct door, no engine between
        assert Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1] == str(proc.pid)
        mine = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        # in every hierarchy the init is grouped in, the command is in the same group
        for line in init:
            if line.endswith(group):
                hierarchy = line.split(":")[0]
                assert any(m.split(":")[0] == hierarchy and m.endswith(group) for m in mine), mine
    finally:
        proc.kill()
        proc.wait(timeout=30)
        rex.run("destroy", name, check=False)


def test_the_console_script_takes_the_same_door(rex: Rex, tmp_path: Path) -> None:
    """The installed ``rex`` (not only ``python -m rexcarcer``) enters directly."""
    import sys

    exe = Path(sys.executable).with_name("rex")
    if not exe.exists():
        missing("a rex console script beside this interpreter")
    _up(rex, tmp_path)
    argv = ["nsenter", f"--net=/run/netns/{rex.netns}", "--", str(exe), "exec", "hello", "--"]
    done = subprocess.run([*argv, "sh", "-c", "echo $GREETING"], capture_output=True, text=True,
                          env=rex.env, check=False)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "hello\n"), done


def test_console_goes_straight_into_the_jail_too(rex: Rex, tmp_path: Path) -> None:
    _up(rex, tmp_path)
    proc = subprocess.Popen(rex.argv("console", "hello"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=rex.env)  # fmt: skip
    try:
        assert proc.stdin is not None

        def shell() -> int | None:
            for kid in procfs.children(proc.pid):
                if Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")[:2] == [
                    b"/bin/sh",
                    b"-l",
                ]:
                    return kid
            return None

        wait_until(shell, "the login shell as a child of rex")
        out, _ = proc.communicate("echo $GREETING; hostname; exit 4\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4
    assert out.split() == ["hello", "hello.jail.rex.internal"]
