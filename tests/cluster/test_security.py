"""The trust boundary on the three-host test bed (conftest.py: h1 is the CA host,
h2 and h3 joined with tokens): the CA's key is on h1 only; jails on two hosts
verify each other with the real openssl against cluster.crt; a real jail's
certificate, or a host's after `rex cluster leave`, gets 403 from the agents'
API; the CRLs in etcd say what was revoked."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.capability import require_tools
from tests.cluster.conftest import ClusterHost, Testbed, new_token, stop
from tests.integration.conftest import copy_example, sh, wait_until

PORT = "4433"
PREFIX = "/rexcarcer/v1/"


def etcd(h: ClusterHost, key: str, *, prefix: bool = True) -> dict[str, str]:
    """Keys under ``PREFIX + key`` and their values, read back with etcdctl."""
    args = ["get", "--prefix", PREFIX + key] if prefix else ["get", PREFIX + key]
    done = h.ns("env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={h.endpoints[0]}", *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=True))


def jail_netns(h: ClusterHost, jail: str) -> str:
    token = hashlib.sha256(str(h.root).encode()).hexdigest()[:6]  # runtime/linux.py
    return f"/run/netns/rex-{token}-{jail}"


def address_of(h: ClusterHost, jail: str) -> str:
    listed = {j["name"]: j for j in json.loads(h.rex("-o", "json", "ls").stdout)}
    return str(listed[jail]["ips"][0]).split("/")[0]


def fetch(h: ClusterHost, jail: str, dest: Path) -> dict[str, Path]:
    """The jail's /etc/ssl/rc as the jail sees it, copied out for openssl and curl."""
    out = {}
    for f in ("host.key", "host.crt", "cluster.crt"):
        out[f] = dest / f"{jail}-{f}"
        out[f].write_text(h.rex("exec", jail, "--", "cat", f"/etc/ssl/rc/{f}").stdout)
    return out


def api_status(client: ClusterHost, url: str, cert: Path, key: Path, cacert: Path) -> str:
    """The HTTP status the agent at ``url`` answers to ``cert`` (curl sends the whole
    chain in ``cert``), or curl's error when TLS itself failed."""
    done = client.ns("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                     "--cacert", str(cacert), "--cert", str(cert), "--key", str(key),
                     url)  # fmt: skip
    return done.stdout if done.returncode == 0 else f"curl exit {done.returncode}"


@contextmanager
def s_server(netns: str, files: dict[str, Path]) -> Iterator[subprocess.Popen[str]]:
    """openssl s_server in a jail's network namespace with the jail's identity,
    requiring a client certificate from the cluster."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns}", "--", "openssl", "s_server", "-accept", PORT,
         "-cert", str(files["host.crt"]), "-cert_chain", str(files["host.crt"]),
         "-key", str(files["host.key"]), "-Verify", "1", "-verify_return_error",
         "-CAfile", str(files["cluster.crt"])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline, line = time.monotonic() + 10, ""
        while "ACCEPT" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "ACCEPT" in line, "openssl s_server did not start"
        yield proc
    finally:
        proc.kill()  # ours, by PID
        proc.wait()


def s_client(netns: str, address: str, files: dict[str, Path], name: str, *extra: str
             ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        ["nsenter", f"--net={netns}", "--", "openssl", "s_client", "-brief",
         "-connect", f"{address}:{PORT}", "-CAfile", str(files["cluster.crt"]),
         "-verify_return_error", "-verify_hostname", name, *extra],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture(scope="module")
def agents(zfs_hosts: list[ClusterHost]) -> Iterator[list[ClusterHost]]:
    """Every host's agent, with its API; h1's signs join and renewal requests."""
    require_tools("curl", "openssl")
    procs = [h.popen("agent", "--lease-ttl", "3", "--idle", "1") for h in zfs_hosts]
    try:
        wait_until(lambda: all(h["alive"] for h in zfs_hosts[0].hosts().values()),
                   "the agents coming up")  # fmt: skip
        # jail traffic between hosts: every host routes to every other's jail subnet
        for h, net in zip(zfs_hosts, ("0", "64", "128"), strict=True):
            route = f"203.0.113.{net}/26 via {h.address}"
            for other in (o for o in zfs_hosts if o is not h):
                wait_until(lambda o=other, r=route: r in o.ns("ip", "route").stdout,
                           f"{other.name}: {route}")  # fmt: skip
        yield zfs_hosts
    finally:
        for p in procs:
            stop(p)


def test_the_ca_key_stays_on_the_ca_host(testbed: Testbed) -> None:
    h1, h2, h3 = testbed.hosts
    everything = etcd(h1, "")
    assert everything, "nothing read from etcd"
    assert not [k for k, v in everything.items() if "PRIVATE KEY" in v], "a key in etcd"
    record = json.loads(everything[PREFIX + "cluster/ca"])
    assert record["host"] == "h1" and "files" not in record
    assert not etcd(h1, "cluster/tokens/"), "every token was used once"
    assert (h1.root / "ca" / "ca.key").is_file()
    for h in (h2, h3):
        assert not (h.root / "ca").exists(), f"{h.name} holds a CA"
        assert (h.root / "jail-ca" / "jail-ca.key").stat().st_mode & 0o777 == 0o600
        assert (h.root / "agent-tls" / "host.key").stat().st_mode & 0o777 == 0o600
        shown = json.loads(h.rex("-o", "json", "ca", "show").stdout)
        assert shown["fingerprint_sha256"] == record["fingerprint"]
        assert shown["jail_ca"]["permitted"] == [str(json.loads(
            everything[PREFIX + f"hosts/{h.name}"])["subnet"])]  # fmt: skip
    # --share-ca over plain http is refused, and changes nothing
    shared = h1.rex("cluster", "init", "--cidr", "203.0.113.0/24", "--host-prefix", "26",
                    "--share-ca", check=False)  # fmt: skip
    assert shared.returncode == 37 and "is not https" in shared.stderr, shared
    assert "files" not in json.loads(etcd(h1, "cluster/ca")[PREFIX + "cluster/ca"])
    # a token is good for a while only; a member cannot make one
    late = new_token(h1, ttl="1s")
    time.sleep(1.5)
    expired = h3.rex("cluster", "join", "--token", late, check=False)
    assert expired.returncode == 44 and "expired" in expired.stderr, expired
    member = h2.rex("cluster", "token", check=False)
    assert member.returncode == 44 and "made on the CA host (h1)" in member.stderr, member


def test_jails_on_two_hosts_verify_each_other(agents: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2, _ = agents
    src = copy_example(tmp_path)
    h1.rex("up", src / "client.rex", "--name", "tlsa", "--host", "h1")
    h2.rex("up", src / "client.rex", "--name", "tlsb", "--host", "h2")
    try:
        a, b = fetch(h1, "tlsa", tmp_path), fetch(h2, "tlsb", tmp_path)
        assert a["cluster.crt"].read_text() == b["cluster.crt"].read_text()
        a_ip = address_of(h1, "tlsa")
        mine = ("-cert", str(b["host.crt"]), "-cert_chain", str(b["host.crt"]),
                "-key", str(b["host.key"]))  # fmt: skip
        with s_server(jail_netns(h1, "tlsa"), a) as server:
            ok = s_client(jail_netns(h2, "tlsb"), a_ip, b, "tlsa.jail.rex.internal", *mine)
            assert ok.returncode == 0 and "Verification: OK" in ok.stderr, ok.stderr
            wrong = s_client(jail_netns(h2, "tlsb"), a_ip, b, "tlsb.jail.rex.internal", *mine)
            assert wrong.returncode != 0 and "hostname mismatch" in wrong.stderr, wrong.stderr
            server.kill()
            log = server.stdout.read() if server.stdout else ""
        assert "CN = tlsb.jail.rex.internal\nverify return:1" in log, log  # A checked B's chain
        # and the other way round: B serves, A connects
        with s_server(jail_netns(h2, "tlsb"), b):
            theirs = ("-cert", str(a["host.crt"]), "-cert_chain", str(a["host.crt"]),
                      "-key", str(a["host.key"]))  # fmt: skip
            back = s_client(jail_netns(h1, "tlsa"), address_of(h2, "tlsb"), a,
                            "tlsb.jail.rex.internal", *theirs)  # fmt: skip
            assert back.returncode == 0 and "Verification: OK" in back.stderr, back.stderr
        # each host's jail CA signs its own CRL, published in etcd: B, once destroyed, is revoked
        h2.rex("destroy", "tlsb")
        crl = tmp_path / "h2.crl"
        crl.write_text(json.loads(etcd(h1, "pki/crls/h2")[PREFIX + "pki/crls/h2"])["pem"])
        checked = sh("openssl", "verify", "-crl_check", "-CRLfile", crl, "-CAfile",
                     b["cluster.crt"], "-untrusted", b["host.crt"], b["host.crt"],
                     check=False)  # fmt: skip
        assert "certificate revoked" in checked.stdout + checked.stderr, checked
        good = sh("openssl", "verify", "-CAfile", a["cluster.crt"], "-untrusted", a["host.crt"],
                  a["host.crt"], check=False)  # fmt: skip
        assert good.returncode == 0, good.stdout + good.stderr
    finally:
        h2.rex("destroy", "tlsb", check=False)
        h1.rex("destroy", "tlsa", check=False)


def test_a_jails_certificate_gets_403_and_a_hosts_name_is_refused(
    agents: list[ClusterHost], tmp_path: Path
) -> None:
    h1, h2, _ = agents
    src = copy_example(tmp_path)
    h2.rex("up", src / "client.rex", "--name", "rogue", "--host", "h2")
    try:
        jail = fetch(h2, "rogue", tmp_path)
        url = "https://198.51.100.11:7443/v1/health"
        # its chain ends at the cluster's root: TLS lets it in; the API does not
        assert api_status(h2, url, jail["host.crt"], jail["host.key"], jail["cluster.crt"]) == "403"
        tls = h2.root / "agent-tls"
        assert api_status(h2, url, tls / "host.crt", tls / "host.key", tls / "cluster.crt") == "200"
        # a jail that asks for a host's name is refused before anything is made
        evil = tmp_path / "evil.rex"
        evil.write_text("BASE busybox\nHOSTNAME h1.host.rex.internal\n")
        refused = h2.rex("up", evil, "--host", "h2", check=False)
        assert refused.returncode == 47 and "lies inside host.rex.internal" in refused.stderr
        assert "evil" not in h2.rex("ls").stdout
        assert not etcd(h1, "jails/evil")
    finally:
        h2.rex("destroy", "rogue", check=False)


def test_a_host_that_left_gets_403_at_once(agents: list[ClusterHost], tmp_path: Path) -> None:
    h1, _h2, h3 = agents
    url = "https://198.51.100.12:7443/v1/health"
    old = tmp_path / "old"
    old.mkdir()
    for f in ("host.crt", "host.key", "cluster.crt"):
        (old / f).write_bytes((h3.root / "agent-tls" / f).read_bytes())
    creds = (old / "host.crt", old / "host.key", old / "cluster.crt")
    assert api_status(h3, url, *creds) == "200"
    h3.rex("cluster", "leave")
    assert api_status(h3, url, *creds) == "403"
    # h1's agent signs the cluster CA's CRL with the host certificate on it
    serial = sh("openssl", "x509", "-in", old / "host.crt", "-noout", "-serial").stdout
    serial = serial.strip().split("=")[1].lower().lstrip("0")
    wait_until(lambda: serial in json.loads(etcd(h1, "pki/root-crl").get(
        PREFIX + "pki/root-crl", "{}")).get("serials", []), "h3 on the root CRL")  # fmt: skip
    crl = tmp_path / "root.crl"
    crl.write_text(json.loads(etcd(h1, "pki/root-crl")[PREFIX + "pki/root-crl"])["pem"])
    checked = sh("openssl", "verify", "-crl_check", "-CRLfile", crl, "-CAfile", old / "cluster.crt",
                 old / "host.crt", check=False)  # fmt: skip
    assert "certificate revoked" in checked.stdout + checked.stderr, checked
    # back with a new token (h1's agent signs): the new certificate works, the old never again
    h3.rex("cluster", "join", "--token", new_token(h1), "--wait", "60")
    tls = h3.root / "agent-tls"
    assert api_status(h3, url, tls / "host.crt", tls / "host.key", tls / "cluster.crt") == "200"
    assert api_status(h3, url, *creds) == "403"
