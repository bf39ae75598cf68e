"""The pure part of bench/bench_perf.py: goals, the tables, the parsers of
strace, -X importtime and /proc output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from perfstats import (
    Goal,
    GoalKind,
    Row,
    ScalePoint,
    duration,
    exec_profile,
    import_times,
    interpreter,
    main_table,
    proc_status_bytes,
    progress_steps,
    scale_points,
    scale_table,
    shares,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0032, "3.2 ms"), (0.0999, "99.9 ms"), (0.48, "480 ms"), (9.9994, "9999 ms"),
     (52.13, "52.1 s"), (-0.004, "-4.0 ms")],
)  # fmt: skip
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ratio_goal() -> None:
    goal = Goal(GoalKind.RATIO, 2.0)
    assert goal.text() == "<= 2x floor"
    assert goal.met(0.2, 0.1) is True
    assert goal.met(0.21, 0.1) is False
    assert goal.versus(0.25, 0.1) == "2.50x"
    assert goal.met(0.2, None) is None  # no floor measured: undecided, not met


def test_delta_goal() -> None:
    goal = Goal(GoalKind.DELTA, 0.015, "raw")
    assert goal.text() == "<= raw + 15.0 ms"
    assert goal.met(0.017, 0.003) is True
    assert goal.met(0.0181, 0.003) is False
    assert goal.versus(0.017, 0.003) == "+14.0 ms"
    assert goal.versus(0.002, 0.003) == "-1.0 ms"


def test_absolute_goal_needs_no_reference() -> None:
    goal = Goal(GoalKind.ABSOLUTE, 0.1)
    assert goal.text() == "<= 100 ms"
    assert goal.met(0.09, None) is True
    assert goal.met(0.11, None) is False
    assert goal.versus(0.09, None) == ""


def test_main_table_without_baseline() -> None:
    rows = [
        Row("floor", this=[0.1, 0.2, 0.3]),
        Row("rex up", "no", [0.5, 0.4, 0.9], ref=[0.1, 0.2, 0.3], goal=Goal(GoalKind.RATIO, 2.0)),
        Row("rex destroy", "no", [0.4], ref=[0.2]),
        Row("peer: bwrap", note="not installed"),
    ]
    table = main_table(rows, with_baseline=False)
    head = [c.strip() for c in table[0].split("|")[1:-1]]
    assert head == ["what", "agent", "median", "worst", "vs reference", "goal", "met"]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table[2:]]
    assert cells[0] == ["floor", "-", "200 ms", "300 ms", "", "", ""]
    assert cells[1] == ["rex up", "no", "500 ms", "900 ms", "2.50x", "<= 2x floor", "NO"]
    assert cells[2] == ["rex destroy", "no", "400 ms", "(n=1)", "2.00x floor", "", ""]
    assert cells[3] == ["peer: bwrap", "-", "not installed", "", "", "", ""]
    assert len({len(line) for line in table}) == 1  # the columns line up


def test_main_table_with_baseline() -> None:
    goal = Goal(GoalKind.RATIO, 2.0)
    rows = [
        Row("rex up", "yes", [0.1, 0.3], [0.4, 0.4], ref=[0.1], goal=goal),
        Row("floor", this=[0.1]),
        Row("peer: podman", note="not installed"),
    ]
    table = main_table(rows, with_baseline=True)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table[2:]]
    assert cells[0] == ["rex up", "yes", "200 ms", "300 ms", "400 ms", "400 ms", "2.00x",
                        "2.00x / 4.00x", "<= 2x floor", "yes / NO"]  # fmt: skip
    assert cells[1][6] == ""  # no baseline figure, no ratio
    assert len(cells[2]) == len(cells[0])


def test_scale_table() -> None:
    a = ScalePoint(10, False, up={"this": [0.5, 0.6]}, ls={"this": [0.05]},
                   notes={"dns:this": "n/a: old"})  # fmt: skip
    b = ScalePoint(10, True, up={"this": [0.4], "baseline": [0.8]}, rss={"this": 50 * 2**20})
    table = scale_table([a, b], ["this", "baseline"])
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table[2:]]
    assert cells[0] == ["10", "no", "550 ms (600 ms) / -", "50.0 ms (50.0 ms) / -",
                        "n/a: old / -", "-"]  # fmt: skip
    assert cells[1][2] == "400 ms (400 ms) / 800 ms (800 ms)"
    assert cells[1][5] == "50.0 MiB / -"


def test_scale_points() -> None:
    assert scale_points(500) == [10, 50, 100, 200, 500]
    assert scale_points(50) == [10, 50]
    assert scale_points(120) == [10, 50, 100, 120]
    assert scale_points(5) == [5]


def test_shares() -> None:
    assert shares(10, 3) == [4, 3, 3]
    assert sum(shares(100, 7)) == 100


@pytest.mark.parametrize(
    ("head", "python"),
    [
        (b"#!/w/.venv/bin/python3\n# -*- coding: utf-8 -*-\n", "/w/.venv/bin/python3"),
        (b"#!/usr/bin/env python3.11\nimport sys\n", "python3.11"),
        (b"#!/bin/sh\nexec foo\n", None),
        (b"\x7fELF\x02\x01", None),
    ],
)  # fmt: skip
def test_interpreter(head: bytes, python: str | None) -> None:
    assert interpreter(head) == python


def test_proc_status() -> None:
    status = "Name:\tpython3\nVmHWM:\t   52000 kB\nVmRSS:\t   41236 kB\nThreads:\t3\n"
    assert proc_status_bytes(status) == 41236 * 1024
    assert proc_status_bytes(status, "VmHWM") == 52000 * 1024
    assert proc_status_bytes("Name:\tx\n") is None


def test_exec_profile_from_strace() -> None:
    text = """\
4001 10:00:00.000000 execve("/work/.venv/bin/rex", ["rex", "up"], 0x7ffd /* 9 vars */) = 0
4002 10:00:00.100000 execve("/usr/local/sbin/zfs", ["zfs"], 0x55 /* 9 vars */) = -1 ENOENT (No such file or directory)
4002 10:00:00.100100 execve("/usr/sbin/zfs", ["zfs", "list"], 0x55 /* 9 vars */) = 0
4002 10:00:00.104100 +++ exited with 0 +++
4001 10:00:00.104200 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=4002} ---
4003 10:00:00.200000 execve("/usr/sbin/zfs", ["zfs", "clone"], 0x55 /* 9 vars */) = 0
4003 10:00:00.220000 +++ exited with 0 +++
4004 10:00:00.300000 execve("/usr/bin/unshare", ["unshare"], 0x55 /* 9 vars */) = 0
4005 10:00:00.310000 execve("/bin/sh", ["/bin/sh", "-c"], 0x55 /* 9 vars */) = 0
4001 10:00:00.500000 +++ exited with 0 +++
"""  # noqa: E501
    got = exec_profile(text)
    assert got.total == pytest.approx(0.5)
    assert got.count == {"zfs": 2, "sh": 1, "unshare": 1}  # the jail's never exited
    assert got.spent == {"zfs": pytest.approx(0.024)}


def test_import_times() -> None:
    text = """\
import time: self [us] | cumulative | imported package
import time:       301 |        301 |       _json
import time:       487 |       9455 |   json.decoder
import time:       262 |      10194 | json
import time:      1000 |      20000 | click
import time:       100 |        100 |   click.types
Usage: rex [OPTIONS] COMMAND [ARGS]...
"""
    total, top = import_times(text, top=2)
    assert total == pytest.approx(0.00215)
    assert top == [("click", pytest.approx(0.0011)), ("json", pytest.approx(0.000749))]


def test_progress_steps() -> None:
    text = """\
[  0.06s] ==> Step 1/1: PROVISION RUN echo built > /built (cached)
[  0.09s] ==> Starting b
    | some output
[ 12.20s] ==> Issuing a certificate for b: it has no certificate yet
b is running
"""
    assert progress_steps(text) == [
        (0.06, "Step 1/1: PROVISION RUN echo built > /built (cached)"),
        (0.09, "Starting b"),
        (12.2, "Issuing a certificate for b: it has no certificate yet"),
    ]


def test_the_floor_runs_the_runtimes_own_start_argv_with_true_as_the_work() -> None:
    # the floor is built from runtime/linux.py's start_argv: a change of its
    # signature must break here, not in the middle of a bench run
    from perfrun import floor_start_argv

    from rexcarcer.runtime.linux import INIT

    argv = floor_start_argv("tok", Path("/m"), Path("/r"), "f")
    assert argv[:2] == ["nsenter", "--net=/run/netns/rex-tok-f"]
    assert "/r/f.exit" in argv and "/bin/true" in argv and INIT not in argv
    assert "--mount-proc=/m/f/proc" in argv
