"""Health checks, restart policies and the boot path, for real: `rex agent` in the
test's network namespace supervising busybox jails on zfs-fuse, with Debian's
unbound (started by `rex host serve`) answering for the cluster zone.

- a jail whose HTTP or CMD check starts failing leaves its `<svc>.svc` A and SRV
  records within two intervals (its own name stays) and comes back when fixed;
- a jail whose init dies is started again as its RESTART policy says;
- the agent started on a host whose jails are down (after a "reboot") starts
  them in DEPENDS order, each after the one it depends on is healthy;
- bad HEALTHCHECK, RESTART and DEPENDS input is refused and creates nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.conftest import Rex, copy_example, sh, wait_until
from tests.integration.reboot import new_boot
from tests.integration.test_dns import ZONE, Dns, _require_unbound, _serve
from tests.integration.test_service_doors import running_agent

INTERVAL = 2.0  # the checks' INTERVAL in these tests


@pytest.fixture
def served(rex: Rex) -> Iterator[Dns]:
    _require_unbound()
    yield from _serve(rex)


def web_jail(tmp_path: Path, name: str, *lines: str) -> Path:
    """The hello example (busybox httpd from /etc/rc) with extra instructions."""
    src = copy_example(tmp_path / name)
    rexfile = src / f"{name}.rex"
    shutil.copy(src / "hello.rex", rexfile)
    with rexfile.open("a") as f:
        f.write("".join(f"{ln}\n" for ln in lines))
    return rexfile


def plain_jail(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / f"{name}.rex"
    path.write_text("BASE busybox\n" + "".join(f"{ln}\n" for ln in lines))
    return path


def health(rex: Rex, name: str) -> object:
    return rex.jails()[name]["health"]


def init_pid(rex: Rex, name: str) -> int:
    return int(json.loads((rex.root / "run" / f"{name}.json").read_text())["init_pid"])


def started(rex: Rex, name: str) -> float:
    """When the jail last finished starting (/etc/rc done): its health record."""
    db = sqlite3.connect(rex.root / "state.db")
    try:
        row = db.execute("SELECT value FROM kv WHERE key = ?", (f"health/{name}",)).fetchone()
    finally:
        db.close()
    return float(json.loads(row[0])["started"]) if row else 0.0


def dump(log: Path) -> str:
    return log.read_text()[-4000:]


def destroy(rex: Rex, *names: str) -> None:
    for name in names:  # dependents first
        rex.run("destroy", name, check=False)


def test_an_unhealthy_jail_leaves_its_service_records_and_comes_back(
    rex: Rex, served: Dns, tmp_path: Path
) -> None:
    every = f"INTERVAL {INTERVAL:g}s TIMEOUT 1s RETRIES 1"
    web = web_jail(tmp_path, "web1", f"HEALTHCHECK {every} HTTP 80 /index.html")
    work = plain_jail(tmp_path, "work1", "SERVICE work PORT 7000",
                      f"HEALTHCHECK {every} CMD test -f /tmp/ok")  # fmt: skip
    with running_agent(rex, tmp_path) as log:
        try:
            rex.run("up", web)
            rex.run("up", work)
            ip_web, ip_work = rex.ip_of("web1"), rex.ip_of("work1")
            rex.run("exec", "work1", "--", "touch", "/tmp/ok")

            def listed(svc: str, ip: str) -> bool:
                return served.answers(f"{svc}.svc.{ZONE}") == [ip]

            try:
                wait_until(lambda: listed("web", ip_web) and listed("work", ip_work),
                           "both jails healthy and in their service records")  # fmt: skip
            except AssertionError as exc:
                raise AssertionError(dump(log)) from exc
            assert health(rex, "web1") == "healthy" and health(rex, "work1") == "healthy"
            assert "HEALTH" in rex.run("ls").stdout.splitlines()[0]

            # the HTTP check fails: httpd is gone
            rex.run("exec", "web1", "--", "killall", "httpd")
            broke = time.monotonic()
            wait_until(lambda: served.rcode(f"web.svc.{ZONE}") == dns.rcode.NXDOMAIN,
                       "web1 out of web.svc", timeout=10 * INTERVAL)  # fmt: skip
            gone = time.monotonic() - broke
            assert served.rcode(f"_web._tcp.svc.{ZONE}", "SRV") == dns.rcode.NXDOMAIN
            assert gone <= 2 * INTERVAL, f"withdrawn after {gone:.2f} s"
            assert served.answers(f"web1.jail.{ZONE}") == [ip_web]  # its own name stays
            assert health(rex, "web1") == "unhealthy"
            assert served.answers(f"work.svc.{ZONE}") == [ip_work]  # the other one stays
            text = log.read_text()
            assert re.search(r"health: web1 is unhealthy \(was healthy\): probe failed; "
                             r"last: HTTP 80 /index.html: ", text), dump(log)  # fmt: skip

            # the CMD check fails: its file is gone
            rex.run("exec", "work1", "--", "rm", "/tmp/ok")
            broke = time.monotonic()
            wait_until(lambda: served.rcode(f"_work._tcp.svc.{ZONE}", "SRV")
                       == dns.rcode.NXDOMAIN, "work1 out of work.svc",
                       timeout=10 * INTERVAL)  # fmt: skip
            assert time.monotonic() - broke <= 2 * INTERVAL
            assert "health: work1 is unhealthy (was healthy): probe failed; last: CMD exited 1" \
                in log.read_text()  # fmt: skip

            # fixed: both come back
            rex.run("exec", "web1", "--", "/usr/sbin/httpd", "-p", "80", "-h", "/var/www")
            rex.run("exec", "work1", "--", "touch", "/tmp/ok")
            wait_until(lambda: listed("web", ip_web) and listed("work", ip_work),
                       "both back in their service records", timeout=10 * INTERVAL)  # fmt: skip
            assert served.answers(f"_web._tcp.svc.{ZONE}", "SRV") == [
                f"10 100 80 web1.jail.{ZONE}."
            ]
            assert "health: web1 is healthy (was unhealthy)" in log.read_text()
        finally:
            destroy(rex, "web1", "work1")


def test_a_jail_whose_init_dies_is_restarted_as_its_policy_says(rex: Rex, tmp_path: Path) -> None:
    with running_agent(rex, tmp_path) as log:
        names = {"dflt": [], "always": ["RESTART always"], "never": ["RESTART no"]}
        try:
            for name, lines in names.items():
                rex.run("up", plain_jail(tmp_path, name, *lines))
            first = {name: init_pid(rex, name) for name in names}
            killed = time.time()
            for pid in first.values():
                os.kill(pid, signal.SIGKILL)  # the jails' inits, started by this test's agent

            def back(name: str) -> bool:  # started again, and that start is done
                return started(rex, name) > killed and rex.jails()[name]["state"] == "running"

            try:
                wait_until(lambda: back("dflt") and back("always"), "dflt and always restarted")
                wait_until(lambda: health(rex, "never") == "exited", "never left down")
            except AssertionError as exc:
                raise AssertionError(dump(log)) from exc
            assert rex.jails()["never"]["state"] == "stopped"
            text = log.read_text()
            # SIGKILL: unshare passes it on as 137, or (util-linux 2.38) exits 1
            killed = r"its init (?:was killed by signal 9|exited with status 1)"
            assert re.search(rf"jails: dflt stopped on its own: {killed}; RESTART on-failure: "
                             "starting it again now", text), text  # fmt: skip
            assert "jails: started dflt again" in text
            assert re.search(rf"jails: never stopped on its own: {killed}; RESTART no leaves it "
                             "stopped", text), text  # fmt: skip
            # nothing of the stopped jail is left running on the host
            netns = sh("ip", "netns", "list").stdout
            assert f"rex-{rex.token}-never" not in netns

            # a clean exit: the jail shuts itself down (its init gets SIGTERM)
            killed = time.time()
            rex.run("exec", "dflt", "--", "kill", "1", check=False)
            rex.run("exec", "always", "--", "kill", "1", check=False)
            wait_until(lambda: back("always"), "always restarted after a clean exit")
            wait_until(lambda: health(rex, "dflt") == "exited", "dflt left down after exit 0")
            assert "jails: dflt stopped on its own: its init exited with status 0; RESTART " \
                "on-failure leaves it stopped" in log.read_text()  # fmt: skip
            # `rex start` brings a jail its policy left down back
            rex.run("start", "never")
            assert rex.jails()["never"]["state"] == "running"
            assert rex.jails()["never"]["health"] is None
        finally:
            destroy(rex, *names)


def test_the_agent_starts_jails_at_boot_in_dependency_order(rex: Rex, tmp_path: Path) -> None:
    db = web_jail(tmp_path, "db", "HEALTHCHECK INTERVAL 1s TIMEOUT 1s RETRIES 1 TCP 80",
                  "RESTART no")  # fmt: skip
    api = plain_jail(tmp_path, "api", "DEPENDS db")
    front = plain_jail(tmp_path, "front", "DEPENDS api", "DEPENDS db")
    names = ["db", "api", "front"]
    boot = tmp_path / "boot_id"  # the host's boot id, as rex reads it (config.BOOT_ID_FILE)
    new_boot(boot)
    rex.env.update({"REX_TESTING": "1", "REX_BOOT_ID_FILE": str(boot)})
    try:
        with running_agent(rex, tmp_path):
            for path in (db, api, front):
                rex.run("up", path)
        # the host "reboots": the agent is gone, the jails' inits die, and the
        # boot id is new (tests/integration/test_faults_reboot.py has the whole reboot)
        for name in names:
            os.kill(init_pid(rex, name), signal.SIGKILL)
        wait_until(lambda: all(j["state"] == "stopped" for j in rex.jails().values()),
                   "the jails down")  # fmt: skip
        new_boot(boot)
        with running_agent(rex, tmp_path) as log:
            try:
                wait_until(lambda: all(j["state"] == "running" for j in rex.jails().values()),
                           "every jail started by the agent")  # fmt: skip
                # a jail runs a moment before the agent logs that it started it
                wait_until(lambda: all(f"jails: started {n} " in log.read_text() for n in names),
                           "the agent's log of every start")  # fmt: skip
            except AssertionError as exc:
                raise AssertionError(dump(log)) from exc
            text = log.read_text()
        starts = {n: text.find(f"jails: started {n} (it has not run since the host booted)")
                  for n in names}  # fmt: skip
        assert all(at >= 0 for at in starts.values()), text
        healthy = text.find("health: db is healthy (was starting)")
        # db (RESTART no: started at boot all the same), then api once db is healthy
        assert starts["db"] < healthy < starts["api"] < starts["front"], text
        assert "jails: api waits for db to be healthy before it starts" in text
        assert started(rex, "db") < started(rex, "api") < started(rex, "front")
    finally:
        destroy(rex, "front", "api", "db")


def test_bad_input_is_refused_and_creates_nothing(rex: Rex, tmp_path: Path) -> None:
    # without an agent, what only an agent does is refused
    done = rex.run("up", plain_jail(tmp_path, "lonely", "RESTART always"), check=False)
    assert done.returncode == 52, done.stderr
    assert "uses RESTART, which the host agent carries out" in done.stderr
    assert "hint: start it: `rex host setup` installs and enables it" in done.stderr
    assert rex.jails() == {}
    with running_agent(rex, tmp_path):
        try:
            rex.run("up", plain_jail(tmp_path, "base1"))
            rex.run("up", plain_jail(tmp_path, "mid1", "DEPENDS base1"))
            before = _without_usage(rex.jails())
            datasets = sh("zfs", "list", "-H", "-o", "name", "-r", rex.dataset).stdout
            bad = {
                "noprobe": (["HEALTHCHECK INTERVAL 5s"], 10, "noprobe.rex:2:24: HEALTHCHECK "
                            "has no probe"),
                "interval": (["HEALTHCHECK INTERVAL 5 TCP 80"], 10, "interval.rex:2:22: "
                             "malformed INTERVAL '5'"),
                "option": (["HEALTHCHECK TCP 80 EVERY 5s"], 10, "option.rex:2:20: unknown "
                           "HEALTHCHECK option 'EVERY'"),
                "policy": (["RESTART sometimes"], 10, "policy.rex:2:9: unknown RESTART policy"),
                "selfish": (["DEPENDS selfish"], 51, "selfish.rex:2:1: jail selfish depends "
                            "on itself"),
                "orphan": (["DEPENDS nosuch"], 51, "orphan.rex:2:1: DEPENDS nosuch: no jail "
                           "named 'nosuch'"),
            }  # fmt: skip
            for name, (lines, code, message) in bad.items():
                done = rex.run("up", plain_jail(tmp_path, name, *lines), check=False)
                assert done.returncode == code, (name, done.stderr)
                assert message in done.stderr, (name, done.stderr)
                assert "\nhint: " in done.stderr and "Traceback" not in done.stderr
            # a cycle: base1 redefined to depend on mid1, which depends on base1
            cyc = plain_jail(tmp_path, "base1", "DEPENDS mid1")
            done = rex.run("up", cyc, check=False)
            assert done.returncode == 51, done.stderr
            assert "base1.rex:2:1: DEPENDS mid1 makes a cycle: base1 -> mid1 -> base1" \
                in done.stderr  # fmt: skip
            assert _without_usage(rex.jails()) == before
            assert sh("zfs", "list", "-H", "-o", "name", "-r", rex.dataset).stdout == datasets
            # and a jail others depend on is not destroyed
            done = rex.run("destroy", "base1", check=False)
            assert done.returncode == 51 and "needed by mid1" in done.stderr, done.stderr
            assert _without_usage(rex.jails()) == before
        finally:
            destroy(rex, "mid1", "base1")


def _without_usage(jails: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """The listing minus what a running jail uses, which changes from one look to the next."""
    return {name: {k: v for k, v in info.items() if k != "usage"} for name, info in jails.items()}
