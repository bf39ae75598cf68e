"""Placement on the three-host test bed: ``rex up --host``, fewest-jails
placement, a pinned IP, all through the agents' mutual-TLS API; a client
without a cluster certificate is refused."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import ClusterHost, stop
from tests.integration.conftest import copy_example, wait_until

API = "https://198.51.100.12:7443"


def _same_ca(hosts: list[ClusterHost]) -> str:
    """`rex cluster init` put h1's CA in etcd and every `rex cluster join` installed it."""
    prints = {h.name: json.loads(h.rex("-o", "json", "ca", "show").stdout)["fingerprint_sha256"]
              for h in hosts}  # fmt: skip
    assert len(set(prints.values())) == 1, prints
    return str(next(iter(prints.values())))


def _wait_api(h: ClusterHost, others: list[ClusterHost]) -> None:
    wait_until(lambda: all(h.hosts()[o.name]["alive"] for o in others), "the agents coming up")


def _agent_pass(h: ClusterHost) -> None:
    """Return once ``h``'s agent has synced its jails after this call. A pass
    syncs routes, then jails (Agent.reconcile in cluster/agent.py): a route of
    the agent's deleted here and put back shows a pass whose jail sync comes
    after the deletion; deleted again and put back, by a later pass, it shows
    that jail sync done. The routes live in h's test namespace."""
    rows = [r.split() for r in h.ns("ip", "route").stdout.splitlines() if " via " in r]
    assert rows, h.ns("ip", "route").stdout
    dst = rows[0][0]

    def routed() -> bool:
        return any(r.split()[:1] == [dst] for r in h.ns("ip", "route").stdout.splitlines())

    for n in (1, 2):
        assert h.ns("ip", "route", "del", dst).returncode == 0
        wait_until(routed, f"{h.name}'s agent adding its route to {dst} back ({n} of 2)")


@pytest.fixture(scope="module")
def agents(zfs_hosts: list[ClusterHost]) -> Iterator[list[ClusterHost]]:
    _same_ca(zfs_hosts)
    procs = [h.popen("agent", "--lease-ttl", "3", "--idle", "1") for h in zfs_hosts]
    try:
        _wait_api(zfs_hosts[0], zfs_hosts)
        time.sleep(0.5)  # the API listens before the lease is put; a margin all the same
        yield zfs_hosts
    finally:
        for p in procs:
            stop(p)


def _up(h: ClusterHost, *args: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(h.rex("-o", "json", "up", *args).stdout)
    return data


def _ls(h: ClusterHost) -> dict[str, dict[str, Any]]:
    return {j["name"]: j for j in json.loads(h.rex("-o", "json", "ls").stdout)}


def test_up_with_host_runs_the_jail_there(agents: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2, h3 = agents
    src = copy_example(tmp_path)
    planned = json.loads(h1.rex("-o", "json", "plan", src / "hello.rex", "--name", "placed",
                                "--host", "h2").stdout)  # fmt: skip
    assert [a["action"] for a in planned] == ["place", "remote"], planned
    assert planned[0]["description"].startswith("on host h2:"), planned
    info = _up(h1, src / "hello.rex", "--name", "placed", "--host", "h2")  # timed by bench/
    try:
        assert info["host"] == "h2" and info["state"] == "running", info
        local = _ls(h2)["placed"]
        assert local["host"] == "h2" and local["state"] == "running"
        ip = str(info["ips"][0]).split("/")[0]
        assert ip.startswith("203.0.113.") and int(ip.split(".")[-1]) in range(64, 128)
        # again from h1: the jail stays where it is (nothing to change)
        assert _up(h1, src / "hello.rex", "--name", "placed")["host"] == "h2"
        # --host elsewhere is refused: a name lives on one host
        other = h1.rex("up", src / "hello.rex", "--name", "placed", "--host", "h3", check=False)
        assert other.returncode == 12 and "already exists on host 'h2'" in other.stderr
        # exec from another host: through h2's agent, output streamed, status passed on
        script = 'echo "$GREETING out"; echo err >&2; exit 7'
        ran = h1.rex("exec", "placed", "--", "sh", "-c", script, check=False)
        assert ran.returncode == 7 and ran.stdout.split() == ["hello", "out", "err"], ran
        # stop, start and destroy from other hosts: done by h2's agent
        h1.rex("stop", "placed")
        assert _ls(h2)["placed"]["state"] == "stopped"
        stopped = h3.rex("exec", "placed", "--", "true", check=False)
        assert (
            stopped.returncode != 0 and "on host h2: jail placed is not running" in stopped.stderr
        )
        h3.rex("start", "placed")
        assert _ls(h2)["placed"]["state"] == "running"
        h1.rex("restart", "placed")
        assert _ls(h2)["placed"]["state"] == "running"
        h1.rex("destroy", "placed")
        assert "placed" not in _ls(h2) and "placed" not in _ls(h1)
        assert not h2.ns("ip", "netns", "list").stdout.count("placed")
        missing = h1.rex("stop", "placed", check=False)
        assert missing.returncode != 0 and "no jail named 'placed'" in missing.stderr
    finally:
        h2.rex("destroy", "placed", check=False)


def test_the_api_refuses_a_client_without_a_cluster_certificate(
    agents: list[ClusterHost],
) -> None:
    h1 = agents[0]
    bare = h1.ns("curl", "-sk", "--max-time", "5", f"{API}/v1/health")
    assert bare.returncode != 0, bare.stdout  # the TLS handshake fails: no certificate
    tls = h1.root / "agent-tls"
    ok = h1.ns("curl", "-s", "--max-time", "5", "--cacert", str(tls / "cluster.crt"),
               "--cert", str(tls / "host.crt"), "--key", str(tls / "host.key"),
               f"{API}/v1/health")  # fmt: skip
    assert json.loads(ok.stdout) == {"host": "h2"}, ok


def test_up_places_on_the_fewest_jails_or_by_pinned_ip(
    agents: list[ClusterHost], tmp_path: Path
) -> None:
    h1, _h2, h3 = agents
    src = copy_example(tmp_path)
    pinned = src / "pinned.rex"
    pinned.write_text("BASE busybox\nIP 203.0.113.140/26\n")  # in h3's subnet
    made: list[tuple[ClusterHost, str]] = []
    try:
        counts = {h["name"]: h["jails"] for h in h1.hosts().values()}
        expected = min(sorted(counts), key=lambda n: counts[n])
        first = _up(h1, src / "client.rex", "--name", "auto1")
        made.append((next(h for h in agents if h.name == first["host"]), "auto1"))
        assert first["host"] == expected, (first, counts)
        info = _up(h1, pinned, "--name", "pinned")
        made.append((h3, "pinned"))
        assert info["host"] == "h3" and info["ips"] == ["203.0.113.140/26"], info
    finally:
        for h, name in made:
            h.rex("destroy", name, check=False)


def test_a_bad_request_reports_the_remote_error(agents: list[ClusterHost], tmp_path: Path) -> None:
    h1 = agents[0]
    bad = tmp_path / "bad.rex"
    bad.write_text("BASE no-such-base\n")
    done = h1.rex("up", bad, "--host", "h2", check=False)
    assert done.returncode not in (0, 38), done.stderr
    assert "on host h2:" in done.stderr, done.stderr


def test_the_agent_keeps_placed_jails_in_their_desired_state(
    agents: list[ClusterHost], tmp_path: Path
) -> None:
    """A jail whose init dies (as after a reboot) is started again by its host's
    agent; one stopped with `rex stop` stays stopped."""
    h1, h2, _h3 = agents
    src = copy_example(tmp_path)
    _up(h1, src / "hello.rex", "--name", "phoenix", "--host", "h2")
    try:
        run = h2.root / "run" / "phoenix.json"
        first = json.loads(run.read_text())["init_pid"]
        os.kill(first, signal.SIGKILL)  # the jail's init, started by this test's rex up

        def back() -> bool:
            # the agent logs the start after the jail is visibly running: wait for both
            if "jails: started phoenix" not in (h2.root / "agent.log").read_text():
                return False
            if _ls(h2)["phoenix"]["state"] != "running":
                return False
            try:
                return bool(json.loads(run.read_text())["init_pid"] != first)
            except (OSError, ValueError):
                return False  # being rewritten by the start

        try:
            wait_until(back, "h2's agent starting phoenix again")
        except AssertionError as exc:
            raise AssertionError((h2.root / "agent.log").read_text()[-3000:]) from exc

        h1.rex("stop", "phoenix")
        # not "wait a while": a whole pass of h2's agent after the stop left it stopped
        _agent_pass(h2)
        assert _ls(h2)["phoenix"]["state"] == "stopped"
    finally:
        h2.rex("destroy", "phoenix", check=False)
