"""The README's first command, for real: examples/demo.sh in a state directory,
pool and network namespace of the test's own, first stopped halfway (its trap
must stop the daemons it started), then in full, then ``demo.sh clean``, which
must stop what the demo started and remove it all."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.capability import require_tools
from tests.integration.conftest import REPO, TOKEN, require, sh, wait_until

PAGE = "<h1>hello from a RexCarcer jail</h1>"
ZONE = "rex.internal"


def _processes_under(root: Path) -> list[str]:
    """Command lines that name the demo's state directory (its daemons, its jails)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state = (proc / "status").read_text() if proc.name.isdigit() else ""
        if str(root) in cmd and "\nState:\tZ" not in state:  # a zombie is dead
            out.append(f"{proc.name}: {cmd}")
    return out


def _daemons_under(root: Path) -> list[str]:
    """The demo's daemons among them: the agent, rex host serve, unbound, rsyslogd."""
    names = ("agent", "host serve", "unbound", "rsyslogd")
    return [p for p in _processes_under(root) if any(n in p for n in names)]


def _interrupted(demo: Path, env: dict[str, str], root: Path) -> None:
    """A run stopped (SIGTERM) once its agent runs stops the daemons it started."""
    proc = subprocess.Popen([demo], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True)  # fmt: skip
    try:
        sock = root / "run" / "agent.sock"
        wait_until(lambda: sock.exists() or proc.poll() is not None, "the demo's agent", 600)
        assert proc.poll() is None, proc.communicate()[0]
        pid = int((root / "demo-agent.pid").read_text())
        assert _daemons_under(root), "the agent and the jailer services run"
        proc.terminate()  # the shell; its trap stops what it started
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out
    assert f"stopped the agent ({pid})" in out, out
    assert (
        not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    )
    assert _daemons_under(root) == [], out


def test_the_demo_shows_names_logs_and_identity_and_cleans_up(tmp_path: Path) -> None:
    require("root", "zfs", "namespaces", "busybox-static", "iproute2")
    require_tools("unbound", "unbound-checkconf", "rsyslogd", "openssl")
    root = tmp_path / "root"  # absent: the demo makes it, so clean removes it
    pool, netns = f"{TOKEN}demo", f"{TOKEN}-demo"
    env = {**os.environ, "REX_ROOT": str(root), "REX_DEMO_POOL": pool, "REX_DEMO_NETNS": netns}
    for key in ("REX_DATASET", "REX_SUBNET", "REX_ZONE", "REX_RUNTIME", "NO_COLOR"):
        env.pop(key, None)
    demo = REPO / "examples" / "demo.sh"
    try:
        _interrupted(demo, env, root)
        done = subprocess.run([demo], capture_output=True, text=True, env=env, timeout=900)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        for name in (f"hello.jail.{ZONE}", f"web.svc.{ZONE}"):
            assert f"==> rex exec client -- wget -qO- http://{name}/\n{PAGE}\n" in done.stdout, out
        assert f"httpd: serving /var/www on port 80 as hello.jail.{ZONE}" in done.stdout, out
        rows = [line.split() for line in done.stdout.splitlines()]  # rex dns ls
        assert ["hello", f"_web._tcp.svc.{ZONE}.", "30", "SRV", "10", "100", "80",
                f"hello.jail.{ZONE}."] in rows, out  # fmt: skip
        assert "host.crt: OK" in done.stdout, out
        pid = int((root / "demo-agent.pid").read_text())
        assert Path(f"/proc/{pid}").exists(), "the agent runs"
        again = subprocess.run([demo], capture_output=True, text=True, env=env, timeout=900)
        assert again.returncode == 0, again.stdout + again.stderr  # idempotent
        assert int((root / "demo-agent.pid").read_text()) == pid  # the same agent
    finally:
        clean = subprocess.run([demo, "clean"], capture_output=True, text=True, env=env,
                               timeout=300)  # fmt: skip
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "cleaned" in clean.stdout
    assert not root.exists()
    assert _processes_under(root) == []
    assert sh("zpool", "list", pool, check=False).returncode != 0
    assert netns not in sh("ip", "netns", "list").stdout
