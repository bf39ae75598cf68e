"""Processes by PID and start time through psutil (runtime/process.py): no
/proc read by rex itself, a zombie is dead, and records of rex 0.1 (a start
time in clock ticks after boot) are still understood."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from rexcarcer.model.jail import JailRecord
from rexcarcer.platform.freebsd import FreeBSDPlatform
from rexcarcer.platform.linux import LinuxPlatform
from rexcarcer.runtime import process
from rexcarcer.runtime.process import Proc
from tests.unit.fakes import fake_host


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


def test_start_time_names_this_process_and_a_wrong_one_is_refused() -> None:
    me = process.start_time(os.getpid())
    assert me is not None and abs(me - psutil.Process().create_time()) < 0.001
    assert process.alive(os.getpid(), me)
    assert not process.alive(os.getpid(), me - 5)  # another process that had this PID
    assert process.start_time(2**22 + 12345) is None  # beyond pid_max


def test_a_zombie_counts_as_dead_and_a_reaped_child_is_gone() -> None:
    child = _child("pass")
    deadline = time.monotonic() + 30
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not process.alive(child.pid)  # exited, not yet reaped: a zombie
    assert process.start_time(child.pid) is None
    process.reap(child.pid)
    assert not process.alive(child.pid)
    child.wait()


def test_proc_json_round_trip_and_the_rex_01_form() -> None:
    me = Proc.of(os.getpid())
    assert Proc.from_json(me.as_json()).same(me) and Proc.from_json(me.as_json()).alive()
    # rex 0.1 wrote {"pid", "start"} with /proc/PID/stat's starttime (ticks after boot)
    created = psutil.Process().create_time()
    ticks = round((created - psutil.boot_time()) * os.sysconf("SC_CLK_TCK"))
    legacy = Proc.from_json({"pid": os.getpid(), "start": ticks})
    assert legacy == Proc(os.getpid(), None, ticks) and legacy.alive()
    assert not Proc.from_json({"pid": os.getpid(), "start": ticks + 1000}).alive()
    assert not Proc(os.getpid(), None).alive()  # start unknown when recorded: not this one


def test_platforms_answer_from_psutil(tmp_path: object) -> None:
    from pathlib import Path

    host = fake_host(Path(str(tmp_path)))
    for platform in (FreeBSDPlatform(host.runner, host.config),
                     LinuxPlatform(host.runner, host.config)):  # fmt: skip
        start = platform.process_start(os.getpid())
        assert start == process.start_time(os.getpid())
        assert platform.process_alive(os.getpid(), start)
        assert not platform.process_alive(os.getpid(), (start or 0) + 1)


def test_a_schema_2_record_keeps_its_owner_by_ticks() -> None:
    created = psutil.Process().create_time()
    ticks = round((created - psutil.boot_time()) * os.sysconf("SC_CLK_TCK"))
    v2 = {"schema": 2, "name": "web", "status": "creating", "pid": os.getpid(),
          "pid_start": ticks}  # fmt: skip
    rec = JailRecord.from_json(v2)
    assert rec.pid_start is None and rec.pid_ticks == ticks
    assert process.process_alive(os.getpid(), rec.pid_start, rec.pid_ticks)
    again = JailRecord.from_json(rec.as_json())  # schema 3 now, nothing lost
    assert again == rec and again.as_json()["schema"] == 3
