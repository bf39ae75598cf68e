"""The CLI through either door gives the same output and exit status: the same
commands run once in process (no agent) and once through this host's agent on
its UNIX socket (`rex agent` running), on the real Linux platform. The agent's
log shows it served the second round; a user who is not root is refused."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.capability import linux_only
from tests.integration.conftest import Rex, copy_example, sh


@contextmanager
def running_agent(rex: Rex, tmp_path: Path) -> Iterator[Path]:
    """`rex agent` in the test's namespace; the path of its log."""
    sock = Path(f"/tmp/rexa-{uuid.uuid4().hex[:8]}.sock")  # sun_path is short
    rex.env["REX_AGENT_SOCKET"] = str(sock)
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        proc = subprocess.Popen(rex.argv("agent", "--idle", "1"), env=rex.env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the agent did not open its socket"
            time.sleep(0.05)
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        sock.unlink(missing_ok=True)


USAGE = r'"(memory|memory_failcnt|oom_kills|pids|cpu_ns)": [0-9]+'


def _round(rex: Rex, app: Path, name: str) -> dict[str, object]:
    """The commands and what they print, with the jail's own name, address and
    creation time replaced so that two rounds compare."""
    up = rex.run("-o", "json", "up", app, "--name", name)
    info = json.loads(up.stdout)
    addr = str(info["ips"][0])
    out: dict[str, object] = {"up": info}
    for key, args in {
        "ls": ("-o", "json", "ls"),
        "exec": ("exec", name, "--", "sh", "-c", "echo $GREETING; exit 7"),
        "stop": ("stop", name),
        "start": ("start", name),
        "ghost": ("start", "ghost"),
        "bad": ("destroy", "Bad_Name"),
        "plan": ("plan", app, "--name", name),
        "destroy": ("destroy", name),
    }.items():
        done = rex.run(*args, check=False)
        text = (done.stdout + "\n" + done.stderr).replace(name, "NAME").replace(addr, "ADDR")
        text = re.sub(r"^\[ *[0-9.]+s\] ", "[TIME] ", text, flags=re.M)  # elapsed time
        text = re.sub(USAGE, r'"\1": N', text)  # what the jail uses differs from run to run
        text = re.sub(r'"created": [0-9]+', '"created": WHEN', text)  # when it was made
        out[key] = (done.returncode, text)
    assert isinstance(info["created"], int) and info["created"] > 0
    info.update(name="NAME", ips=["ADDR"], hostname=str(info["hostname"]).replace(name, "NAME"),
                usage=sorted(info.get("usage", {})), created="WHEN")  # fmt: skip
    return out


def test_in_process_and_through_the_agent_say_the_same(rex: Rex, tmp_path: Path) -> None:
    app = copy_example(tmp_path) / "hello.rex"
    rex.run("build", app)
    alone = _round(rex, app, "alpha-jail")
    with running_agent(rex, tmp_path) as log:
        served = _round(rex, app, "beta-jail")
        text = log.read_text()
    assert served == alone
    assert "agent: up beta-jail for uid 0" in text and "agent: plan beta-jail for uid 0" in text
    assert "alpha-jail" not in text
    assert alone["exec"] == (7, "hello\n\n")


def test_a_user_who_is_not_root_is_refused(rex: Rex, tmp_path: Path) -> None:
    linux_only("setpriv(1) from util-linux drops to another user after nsenter")
    with running_agent(rex, tmp_path):
        sock = Path(rex.env["REX_AGENT_SOCKET"])
        assert sock.stat().st_mode & 0o777 == 0o600
        argv = rex.argv("ls")  # nsenter (as root) into the netns, then the user
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        done = sh(*argv[:3], *nobody, *argv[3:], check=False, env=rex.env)
    assert done.returncode == 2
    assert "permission denied on the agent socket" in done.stderr
