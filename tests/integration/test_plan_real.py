"""`rex plan` shows exactly the commands `rex up` then runs, on the real
platform (Linux here, FreeBSD in its CI): the plan's command lines against the
`+ argv` lines `rex --debug up` logs, queries (which change nothing) left out
of both."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tests.integration.conftest import Rex, copy_example
from tests.unit.test_plan import comparable, is_record_copy

# commands that only read: `rex plan` shows what changes the host
QUERIES = (
    ("zfs", "list"), ("zfs", "get"), ("zfs", "version"), ("ip", "-o", "addr", "show"),
    ("ip", "link", "show"), ("ip", "-4", "-j", "route"), ("ip", "-6", "-j", "route"),
    ("jls",), ("sockstat",),
    # the cluster CA's subject hash for the jail's trust store: computed on the host
    ("openssl", "x509"),
    ("ip", "-j", "addr", "show"), ("nft", "-j", "list"),
)  # fmt: skip


def logged(stderr: str) -> list[list[str]]:
    """The argv of every `+ ...` line of --debug; an argument with newlines (the
    jail's start script) continues the line until its quote closes."""
    out: list[list[str]] = []
    lines = iter(stderr.splitlines())
    for line in lines:
        if not line.startswith("+ "):
            continue
        text = line[2:]
        while True:
            try:
                out.append(shlex.split(text.removesuffix(" &")))
                break
            except ValueError:  # an open quote: the command goes on
                text += "\n" + next(lines)
    return out


def _changes(stderr: str) -> list[list[str]]:
    return [a for a in logged(stderr) if not any(tuple(a[: len(q)]) == q for q in QUERIES)
            and not is_record_copy(a)]  # fmt: skip


def test_the_plan_is_what_up_runs(rex: Rex, tmp_path: Path) -> None:
    app = copy_example(tmp_path) / "hello.rex"
    rex.run("build", app)  # the steps are cached: the plan then shows clone and start
    actions = json.loads(rex.run("-o", "json", "plan", app).stdout)
    # hello.rex has no RUN step: the guard is loaded when the jail starts
    assert [a["action"] for a in actions] == ["cached", "cached", "address", "clone", "firewall",
                                              "files", "start"]  # fmt: skip
    planned = [shlex.split(c) for a in actions for c in a["commands"] if a["action"] != "files"]
    done = rex.run("--debug", "up", app)
    # the clone carries the jail's record: named by the plan, not listed
    assert comparable(_changes(done.stderr)) == comparable(planned)
    clone = next(a for a in logged(done.stderr) if a[:2] == ["zfs", "clone"])
    assert any(a.startswith("rexcarcer:record=") for a in clone), clone
    again = json.loads(rex.run("-o", "json", "plan", app).stdout)
    assert [a["action"] for a in again] == ["none"]


def test_the_plan_of_a_run_step_is_what_its_build_runs(rex: Rex, tmp_path: Path) -> None:
    """A RUN step's own network: the guard, the build address, the namespace."""
    app = tmp_path / "step.rex"
    app.write_text("BASE busybox\nPROVISION RUN echo built > /built\n")
    actions = json.loads(rex.run("-o", "json", "plan", app).stdout)
    assert [a["action"] for a in actions] == ["firewall", "build", "address", "clone", "files",
                                              "start"]  # fmt: skip
    planned = [shlex.split(c) for a in actions[:2] for c in a["commands"]
               if not c.startswith("write ")]  # fmt: skip
    assert planned[0] == ["nft", "-j", "-f", "-"]
    done = rex.run("--debug", "build", app)
    # the image's creation time is the only value the plan cannot know
    assert comparable(_changes(done.stderr)) == comparable(planned)
    assert any(a[0] == "nsenter" and "--net=/run/netns/rex-" in a[1] for a in planned)
