"""runtime/linux.py ``bridge_holds``: a jail's start asks the kernel, in its own
process, whether the bridge is up with the host's address, and asks `ip` only
when the kernel's answer is no. Checked against `ip` on a bridge of the test's
own network namespace."""

from __future__ import annotations

import json
import sys

import pytest

from tests.integration.conftest import Rex

pytestmark = pytest.mark.integration

PROBE = (
    "import ipaddress, json, sys; from rexcarcer.runtime.linux import bridge_holds; "
    "print(json.dumps([bridge_holds(n, ipaddress.ip_interface(a)) "
    "for n, a in json.loads(sys.argv[1])]))"
)


def probe(rex: Rex, *asks: tuple[str, str]) -> list[bool]:
    done = rex.in_netns(sys.executable, "-c", PROBE, json.dumps(asks))
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_the_kernel_answers_as_ip_does(rex: Rex) -> None:
    for argv in (
        ["link", "add", "rxprobe0", "type", "bridge"],
        ["addr", "add", "203.0.113.77/24", "dev", "rxprobe0"],
        ["addr", "add", "203.0.113.78/24", "dev", "rxprobe0"],  # a second one
        ["addr", "add", "2001:db8:77::1/64", "dev", "rxprobe0", "nodad"],
    ):
        done = rex.in_netns("ip", *argv)
        assert done.returncode == 0, (argv, done.stderr)
    v4, v6 = ("rxprobe0", "203.0.113.77/24"), ("rxprobe0", "2001:db8:77::1/64")
    assert probe(rex, v4, v6) == [False, False]  # down: not ready (ensure_bridge sets it up)
    assert rex.in_netns("ip", "link", "set", "rxprobe0", "up").returncode == 0
    got = probe(
        rex,
        v4,
        v6,
        ("rxprobe0", "203.0.113.77/25"),  # another prefix
        ("rxprobe0", "203.0.113.79/24"),  # not on it
        ("rxprobe0", "203.0.113.78/24"),  # on it, not its first: `ip` is asked
        ("rxprobe0", "2001:db8:77::1/80"),
        ("rxprobe0", "2001:db8:77::2/64"),
        ("rxnone0", "203.0.113.77/24"),  # no such link
    )
    assert got == [True, True, False, False, False, False, False, False]
    shown = rex.in_netns("ip", "-o", "addr", "show", "dev", "rxprobe0").stdout
    assert " 203.0.113.77/24 " in shown and " 2001:db8:77::1/64 " in shown
