"""FreeBSD rctl(8): the argv rex runs for each LIMIT, and the usage parser.

No FreeBSD host runs here, so tests/data/limits/rctl-u-jail.txt is not a
capture: it is the published ``rctl -hu jail:NAME`` example (rctl(8) EXAMPLES;
the resource order of sys/kern/kern_racct.c) with the amounts written out as
plain numbers, which is what ``rctl -u`` prints (usr.bin/rctl/rctl.c
show_usage(): ``resource=amount`` per line, humanized only with -h).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.limits import LimitError, Limits, Resource
from rexcarcer.limits.rctl import (
    Rctl,
    add_argv,
    amount,
    common_usage,
    parse_usage,
    racct_argv,
    racct_problem,
    remove_argv,
    rules,
    usage_argv,
)
from rexcarcer.run import Completed, ScriptedRunner

USAGE = (Path(__file__).resolve().parents[1] / "data" / "limits" / "rctl-u-jail.txt").read_text()
DISABLED = "rctl: RACCT/RCTL present, but disabled; enable using kern.racct.enable=1 tunable\n"
NO_RULE = "rctl: failed to remove rule 'jail:web:pcpu': No such process\n"


def test_rules_for_every_limit() -> None:
    limits = Limits(memory=512 << 20, cpu=1.5, pids=200, openfiles=1024)
    assert rules("web", limits) == [
        "jail:web:memoryuse:deny=536870912",
        "jail:web:pcpu:deny=150",
        "jail:web:maxproc:deny=200",
        "jail:web:openfiles:deny=1024",
    ]
    assert add_argv(rules("web", limits)[0]) == ["rctl", "-a", "jail:web:memoryuse:deny=536870912"]
    assert rules("web", Limits()) == []


def test_cpu_is_percent_of_one_core() -> None:
    assert [amount(Resource.CPU, c) for c in (0.01, 0.5, 1.0, 2.25, 1024.0)] == [
        1,
        50,
        100,
        225,
        102400,
    ]


def test_argv_builders() -> None:
    assert remove_argv("web") == ["rctl", "-r", "jail:web"]
    assert remove_argv("web", Resource.MEMORY) == ["rctl", "-r", "jail:web:memoryuse"]
    assert usage_argv("web") == ["rctl", "-u", "jail:web"]
    assert racct_argv() == ["sysctl", "-n", "kern.racct.enable"]


@pytest.mark.parametrize("name", ["web:x", "a,b", "a/b", "a=b", "", "Web"])
def test_names_that_would_change_a_rule_are_refused(name: str) -> None:
    with pytest.raises(LimitError, match="bad jail name for rctl"):
        rules(name, Limits(pids=1))


def test_usage_parser() -> None:
    raw = parse_usage(USAGE)
    assert len(raw) == 25
    assert raw["memoryuse"] == 4136960 and raw["maxproc"] == 1 and raw["cputime"] == 21
    assert common_usage(raw) == {
        "memory": 4136960,
        "pids": 1,
        "openfiles": 256,
        "cpu_ns": 21_000_000_000,
    }
    # -h output and noise are skipped, not misread
    assert parse_usage("datasize=68K\nmemoryuse=4040K\nmaxproc=1\ngarbage\n=3\n") == {"maxproc": 1}


def test_racct_check() -> None:
    assert racct_problem(0, "1\n") is None
    assert racct_problem(0, "0\n") == "resource accounting is off (kern.racct.enable=0)"
    assert racct_problem(1, "") is not None and "no RACCT/RCTL" in str(racct_problem(1, ""))


def test_apply_adds_the_set_limits_and_drops_the_others() -> None:
    r = ScriptedRunner(strict=True)
    r.on(["sysctl", "-n", "kern.racct.enable"], "1\n")
    r.on(["rctl", "-a"], "")
    r.on(["rctl", "-r"], Completed((), 1, "", NO_RULE))
    Rctl(r).apply("web", Limits(memory=64 << 20, pids=20))
    assert r.calls == [
        ("sysctl", "-n", "kern.racct.enable"),
        ("rctl", "-a", "jail:web:memoryuse:deny=67108864"),
        ("rctl", "-r", "jail:web:pcpu"),
        ("rctl", "-a", "jail:web:maxproc:deny=20"),
        ("rctl", "-r", "jail:web:openfiles"),
    ]


def test_apply_says_how_to_enable_racct() -> None:
    r = ScriptedRunner(strict=True)
    r.on(["sysctl", "-n", "kern.racct.enable"], "0\n")
    with pytest.raises(LimitError, match=r"kern\.racct\.enable=0") as err:
        Rctl(r).apply("web", Limits(pids=20))
    assert err.value.hint == "set kern.racct.enable=1 in /boot/loader.conf and reboot (rctl(4))"
    assert r.calls == [("sysctl", "-n", "kern.racct.enable")]  # no rule tried


def test_remove_is_idempotent_and_quiet_without_racct() -> None:
    for stderr in (NO_RULE, DISABLED):
        r = ScriptedRunner(strict=True)
        r.on(["rctl", "-r"], Completed((), 1, "", stderr))
        Rctl(r).remove("web")
        assert r.calls == [("rctl", "-r", "jail:web")]
    r = ScriptedRunner(strict=True)
    denied = "rctl: failed to remove rule 'jail:web': Operation not permitted"
    r.on(["rctl", "-r"], Completed((), 1, "", denied))
    with pytest.raises(LimitError, match="Operation not permitted"):
        Rctl(r).remove("web")


def test_usage_through_the_runner() -> None:
    r = ScriptedRunner(strict=True)
    r.on(["rctl", "-u", "jail:web"], USAGE)
    assert Rctl(r).usage("web")["memory"] == 4136960
    r = ScriptedRunner(strict=True)
    r.on(["rctl", "-u"], Completed((), 1, "", DISABLED))
    with pytest.raises(LimitError, match="could not read the usage of jail web") as err:
        Rctl(r).usage("web")
    assert err.value.hint is not None and "loader.conf" in err.value.hint
