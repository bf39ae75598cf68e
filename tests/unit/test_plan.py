"""`rex plan` renders the command lines the drivers run, from the same builders:
on the FreeBSD platform (jail(8) through a scripted runner, the storage's own
zfs(8) lines) the plan of a `rex up` equals what that `rex up` then runs.
tests/integration/test_plan_real.py checks the same on the real Linux platform."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rexcarcer.base.source import Bases
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.platform.freebsd import FreeBSDPlatform
from rexcarcer.rexfile.parser import parse
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.freebsd import FreeBSDRuntime
from rexcarcer.storage.fake import FakeStorage
from tests.unit.fakes import fake_host

JLS = ["jls", "--libxo=json", "jid", "name", "path"]


def _freebsd_engine(tmp_path: Path) -> tuple[Engine, ScriptedRunner]:
    host = fake_host(tmp_path)
    runner = ScriptedRunner()
    runtime = FreeBSDRuntime(runner, conf_dir=tmp_path / "jail.conf.d", is_mount=lambda p: False)
    host.platform = FreeBSDPlatform(runner, host.config, runtime=runtime)
    host.runner = runner
    return Engine(host, Bases(), policy=NetworkPolicy()), runner


def _running(name: str, root: Path) -> str:
    jail = {"jid": "1", "name": name, "path": str(root)}
    return json.dumps({"__version": "2", "jail-information": {"jail": [jail]}})


def test_the_plan_of_an_up_is_what_the_up_runs(tmp_path: Path) -> None:
    eng, runner = _freebsd_engine(tmp_path)
    storage = eng.host.storage
    assert isinstance(storage, FakeStorage)
    rexfile = parse("BASE bb\nIP 203.0.113.8/24\n", path=tmp_path / "web.rex")
    plan = plan_up(eng, rexfile, "web")
    assert [a.kind for a in plan] == ["address", "clone", "firewall", "files", "start"]
    runner.on(JLS, _running("web", storage.mountpoint("jails") / "web"))
    storage.calls.clear()
    jails.up(eng, rexfile, "web")
    ran = [list(c) for c in runner.calls if not _reads(c)]
    assert comparable([list(c) for a in plan for c in a.commands]) == comparable(
        _changes(storage.calls) + ran
    )
    assert ran == [
        ["pfctl", "-a", "rexcarcer/guard", "-f", "-"],  # the guard, before the jail starts
        ["jail", "-f", str(tmp_path / "jail.conf.d" / "web.conf"), "-c", "web"],
    ]


def _changes(calls: list[list[str]]) -> list[list[str]]:
    """zfs calls less the copy of the jail's record onto its dataset: bookkeeping,
    like the store's record, which the plan names but does not list (engine/plan.py)."""
    return [c for c in calls if not is_record_copy(c)]


def comparable(commands: list[list[str]]) -> list[list[str]]:
    """Commands as a plan and its run both show them: the images'
    ``rexcarcer:created`` stamp (the second the step was built, read from the
    clock) as ``T``, so a plan made in one second and the run in the next
    compare, and a new jail's clone without the ``-o rexcarcer:record`` options
    that carry its record (engine/persist.py): bookkeeping, which the plan
    names but does not list (engine/plan.py)."""
    out = []
    for c in commands:
        argv: list[str] = []
        for a in c:
            if argv and argv[-1] == "-o" and a.startswith("rexcarcer:record"):
                argv.pop()
                continue
            argv.append(re.sub(r"^rexcarcer:created=\d+$", "rexcarcer:created=T", a))
        out.append(argv)
    return out


def is_record_copy(argv: list[str] | tuple[str, ...]) -> bool:
    return argv[:2] in (["zfs", "set"], ("zfs", "set")) and argv[2].startswith("rexcarcer:record")


def _reads(argv: tuple[str, ...]) -> bool:
    """Commands that only read: jls, ifconfig, pfctl -s, rctl -u (rex ls's usage),
    sysctl -n."""
    return (
        argv[0] in ("jls", "ifconfig")
        or (argv[0] == "pfctl" and "-s" in argv)
        or argv[:2] in (("rctl", "-u"), ("sysctl", "-n"))
    )
