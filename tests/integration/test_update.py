"""Volumes and updates in place on the real Linux platform: data that survives,
updates that roll back on their own, rex rollback, a killed update."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from rexcarcer.errors import UpdateFailed
from tests.integration.conftest import Rex, copy_example, sh

RC = "#!/bin/sh\n/usr/sbin/httpd -p 80 -h /var/www\n"


def _app(tmp_path: Path, page: str, rc: str = RC) -> Path:
    ex = copy_example(tmp_path) if not (tmp_path / "hello").exists() else tmp_path / "hello"
    (ex / "index.html").write_text(page)
    (ex / "rc").write_text(rc)
    app = ex / "app.rex"
    app.write_text("BASE busybox\nPROVISION COPY index.html /var/www/index.html\n"
                   "PROVISION COPY rc /etc/rc\nVOLUME data /srv/data 64M\n")  # fmt: skip
    return app


def _page(rex: Rex, ip: str) -> str:
    return rex.in_netns("timeout", "5", "/bin/busybox", "wget", "-qO-", f"http://{ip}/").stdout


def test_an_update_keeps_data_address_and_name(rex: Rex, tmp_path: Path) -> None:
    app = _app(tmp_path, "one\n")
    rex.run("up", app)
    ip = rex.ip_of("app")
    assert _page(rex, ip) == "one\n"
    rex.run("exec", "app", "--", "sh", "-c", "echo kept > /srv/data/f")
    before = rex.jails()["app"]
    plan = rex.json("plan", str(_app(tmp_path, "two\n")))
    assert [a["action"] for a in plan][-1] == "replace"  # type: ignore[index]
    assert "the content of a COPY source changed" in plan[-1]["description"]  # type: ignore[index]
    done = rex.run("up", app)
    assert "Updating app to generation 2" in done.stderr
    after = rex.jails()["app"]
    assert after["ips"] == before["ips"] and after["hostname"] == before["hostname"]
    assert _page(rex, ip) == "two\n"
    assert rex.run("exec", "app", "--", "cat", "/srv/data/f").stdout == "kept\n"
    history = rex.json("history", "app")
    assert [(g["generation"], g["current"]) for g in history] == [(1, False), (2, True)]  # type: ignore[index]
    # an update whose /etc/rc fails rolls back on its own; the old page is served again
    bad = rex.run("up", _app(tmp_path, "three\n", rc="#!/bin/sh\nexit 3\n"), check=False)
    assert bad.returncode == UpdateFailed.exit_code, bad.stderr
    assert "rolled back to generation 2" in bad.stderr and "exited with status 3" in bad.stderr
    assert _page(rex, ip) == "two\n"
    assert rex.jails()["app"]["state"] == "running"
    # rex rollback: generation 1 again
    rex.run("rollback", "app")
    assert _page(rex, ip) == "one\n"
    assert rex.run("exec", "app", "--", "cat", "/srv/data/f").stdout == "kept\n"
    volumes = rex.json("volume", "ls")
    assert [(v["jail"], v["name"], v["path"], v["attached"]) for v in volumes] == [  # type: ignore[union-attr]
        ("app", "data", "/srv/data", True)]  # fmt: skip


def test_destroy_keeps_volumes_unless_asked(rex: Rex, tmp_path: Path) -> None:
    app = _app(tmp_path, "one\n")
    rex.run("up", app)
    rex.run("exec", "app", "--", "sh", "-c", "echo kept > /srv/data/f")
    gone = rex.run("destroy", "app")
    assert "kept the volumes of app: app.data" in gone.stderr
    rex.run("up", app)
    assert rex.run("exec", "app", "--", "cat", "/srv/data/f").stdout == "kept\n"
    rex.run("destroy", "--volumes", "app")
    assert rex.json("volume", "ls") == []
    assert rex.leftovers() == {"netns": [], "datasets": [], "mounts": [], "processes": []}


def test_a_killed_update_leaves_a_jail_that_the_next_up_finishes(rex: Rex, tmp_path: Path) -> None:
    app = _app(tmp_path, "one\n")
    rex.run("up", app)
    ip = rex.ip_of("app")
    _app(tmp_path, "two\n")
    proc = rex.popen("up", app)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # kill it right after the old generation was put aside
        if "Cloning" in line and "jails/app" in line:
            break
        assert time.monotonic() < deadline
    assert proc.poll() is None, "rex up ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    rex.run("up", app)  # goes back to generation 1, then updates again
    assert _page(rex, ip) == "two\n"
    assert rex.jails()["app"]["state"] == "running"
    names = sh("zfs", "list", "-H", "-o", "name", "-r", rex.dataset).stdout.split()
    rel = [n.removeprefix(rex.dataset + "/") for n in names]
    assert [n for n in rel if n.startswith("jails/")] == ["jails/app"]
    kept = [n for n in rel if n.startswith("generations/")]
    assert kept and all(n.startswith("generations/app.") for n in kept)  # the way back, kept
