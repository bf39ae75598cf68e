"""Jail identity for real: rex up issues certificates into jails, and the real
``openssl`` completes (or refuses) TLS handshakes between two jails' network
namespaces with them: server in jail A's netns, client in jail B's."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from tests.capability import linux_only, require_tools
from tests.integration.conftest import Rex, sh


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only("TLS between two jails' network namespaces entered with nsenter")


PORT = "4433"


def require_openssl() -> None:
    require_tools("openssl")


def write_rex(tmp_path: Path, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.rex"
    path.write_text(f"BASE busybox\nPROVISION RUN true\n{extra}")
    return path


def jail_netns(rex: Rex, name: str) -> str:
    return f"/run/netns/rex-{rex.token}-{name}"


def fetch(rex: Rex, jail: str, dest: Path) -> dict[str, Path]:
    """The jail's /etc/ssl/rc, as the jail sees it, copied out for openssl."""
    out = {}
    for f in ("host.key", "host.crt", "cluster.crt"):
        text = rex.run("exec", jail, "--", "cat", f"/etc/ssl/rc/{f}").stdout
        out[f] = dest / f"{jail}-{f}"
        out[f].write_text(text)
    return out


@contextmanager
def s_server(netns: str, cert: Path, key: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """``-cert_chain``: s_server sends only the first certificate of ``-cert``, and a
    jail's host.crt is its certificate followed by its host's jail CA."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns}", "--", "openssl", "s_server", "-accept", PORT,
         "-cert", str(cert), "-cert_chain", str(cert), "-key", str(key), *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        line = ""
        while "ACCEPT" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "ACCEPT" in line, "openssl s_server did not start"
        yield proc
    finally:
        proc.kill()  # ours, by PID
        proc.wait()


def s_client(netns: str, address: str, ca: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={netns}", "--", "openssl", "s_client", "-brief",
         "-connect", f"{address}:{PORT}", "-CAfile", str(ca), "-verify_return_error", *extra],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture
def two_jails(rex: Rex, tmp_path: Path) -> dict[str, object]:
    require_openssl()
    rex.run("up", write_rex(tmp_path, "a", "SERVICE web PORT 4433\n"))
    rex.run("up", write_rex(tmp_path, "b"))
    return {
        "a": fetch(rex, "a", tmp_path), "b": fetch(rex, "b", tmp_path),
        "a_ip": rex.ip_of("a"), "a_ns": jail_netns(rex, "a"), "b_ns": jail_netns(rex, "b"),
    }  # fmt: skip


def test_files_in_the_jail_and_what_openssl_says_of_them(
    rex: Rex, tmp_path: Path, two_jails: dict
) -> None:  # type: ignore[type-arg]
    mode = rex.run("exec", "a", "--", "stat", "-c", "%a %u", "/etc/ssl/rc/host.key").stdout
    assert mode.split() == ["600", "0"]
    a = two_jails["a"]
    ok = sh("openssl", "verify", "-CAfile", a["cluster.crt"], "-untrusted", a["host.crt"],
            a["host.crt"])  # fmt: skip
    assert ok.stdout.strip().endswith(": OK")
    # the leaf is signed by this host's jail CA, second in host.crt, not by the root
    alone = sh("openssl", "verify", "-CAfile", a["cluster.crt"], a["host.crt"], check=False)
    assert alone.returncode != 0 and "unable to get local issuer" in alone.stdout + alone.stderr
    chain = a["host.crt"].read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2
    (tmp_path / "jail-ca.pem").write_text("-----BEGIN CERTIFICATE" + chain.split(
        "-----BEGIN CERTIFICATE")[2])  # fmt: skip
    ca_text = sh("openssl", "x509", "-in", tmp_path / "jail-ca.pem", "-noout", "-ext",
                 "basicConstraints,nameConstraints").stdout  # fmt: skip
    assert "CA:TRUE, pathlen:0" in ca_text, ca_text
    assert "Permitted:\n" in ca_text and "IP:203.0.113.0/255.255.255.0" in ca_text, ca_text
    assert "Excluded:\n" in ca_text and "DNS:host.rex.internal" in ca_text, ca_text
    text = sh(
        "openssl",
        "x509",
        "-in",
        a["host.crt"],
        "-noout",
        "-ext",
        "subjectAltName,keyUsage,extendedKeyUsage,basicConstraints",
    ).stdout
    assert "DNS:a.jail.rex.internal" in text and "DNS:web.svc.rex.internal" in text
    assert f"IP Address:{two_jails['a_ip']}" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "CA:FALSE" in text and "Digital Signature" in text
    pub = sh("openssl", "pkey", "-in", a["host.key"], "-pubout").stdout
    assert pub == sh("openssl", "x509", "-in", a["host.crt"], "-noout", "-pubkey").stdout
    show = rex.run("ca", "show").stdout
    assert "sha256:" in show and "CN=RexCarcer CA" in show
    assert re.search(r"^mode: +self-signed$", show, re.M), show
    assert re.search(r"^this host's jail CA: +CN=jails of ", show, re.M), show


def test_tls_between_jails_with_the_real_openssl(two_jails: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    a, b = two_jails["a"], two_jails["b"]
    ip, a_ns, b_ns = two_jails["a_ip"], two_jails["a_ns"], two_jails["b_ns"]
    with s_server(a_ns, a["host.crt"], a["host.key"]):
        good = s_client(b_ns, ip, b["cluster.crt"], "-verify_hostname", "a.jail.rex.internal")
        assert good.returncode == 0, good.stderr
        assert "Verification: OK" in good.stderr
        by_service = s_client(
            b_ns, ip, b["cluster.crt"], "-verify_hostname", "web.svc.rex.internal"
        )
        assert by_service.returncode == 0, by_service.stderr
        by_ip = s_client(b_ns, ip, b["cluster.crt"], "-verify_ip", ip)
        assert by_ip.returncode == 0, by_ip.stderr
        wrong = s_client(b_ns, ip, b["cluster.crt"], "-verify_hostname", "b.jail.rex.internal")
        assert wrong.returncode != 0 and "hostname mismatch" in wrong.stderr, wrong.stderr
    # a server whose certificate names A but comes from another CA
    other = trustme.CA().issue_cert("a.jail.rex.internal")
    other.cert_chain_pems[0].write_to_path(str(tmp_path / "other.crt"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    with s_server(a_ns, tmp_path / "other.crt", tmp_path / "other.key"):
        foreign = s_client(b_ns, ip, b["cluster.crt"], "-verify_hostname", "a.jail.rex.internal")
        assert foreign.returncode != 0
        assert "unable to get local issuer certificate" in foreign.stderr, foreign.stderr


def test_mutual_tls_with_the_clients_jail_certificate(two_jails: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    a, b = two_jails["a"], two_jails["b"]
    ip, a_ns, b_ns = two_jails["a_ip"], two_jails["a_ns"], two_jails["b_ns"]
    name = ("-verify_hostname", "a.jail.rex.internal")
    require_client = ("-Verify", "1", "-verify_return_error", "-CAfile", str(a["cluster.crt"]))
    stranger = trustme.CA().issue_cert("b.jail.rex.internal")
    stranger.cert_chain_pems[0].write_to_path(str(tmp_path / "s.crt"))
    stranger.private_key_pem.write_to_path(str(tmp_path / "s.key"))
    with s_server(a_ns, a["host.crt"], a["host.key"], *require_client) as server:
        mutual = s_client(
            b_ns,
            ip,
            b["cluster.crt"],
            *name,
            "-cert",
            str(b["host.crt"]),
            "-cert_chain",
            str(b["host.crt"]),
            "-key",
            str(b["host.key"]),
        )
        assert mutual.returncode == 0, mutual.stderr
        # TLS 1.2, so that the client sees the server refuse its certificate
        # (in TLS 1.3 the client may finish before the server's verdict arrives)
        anonymous = s_client(b_ns, ip, b["cluster.crt"], *name, "-tls1_2")
        assert anonymous.returncode != 0
        forged = s_client(
            b_ns,
            ip,
            b["cluster.crt"],
            *name,
            "-tls1_2",
            "-cert",
            str(tmp_path / "s.crt"),
            "-key",
            str(tmp_path / "s.key"),
        )
        assert forged.returncode != 0
        server.kill()
        log = server.stdout.read() if server.stdout else ""
    assert "CN = b.jail.rex.internal\nverify return:1" in log, log  # the server checked B
    assert "unable to get local issuer certificate" in log, log  # and refused the stranger


def test_renew_and_destroy_revoke_and_the_crl_says_so(rex: Rex, tmp_path: Path) -> None:
    require_openssl()
    rex.run("up", write_rex(tmp_path, "a"))
    (tmp_path / "old").mkdir()
    old = fetch(rex, "a", tmp_path / "old")
    renewed = rex.run("ca", "renew", "a")
    assert "a: renewed (renewal was asked for)" in renewed.stdout
    new = fetch(rex, "a", tmp_path)
    assert new["host.crt"].read_text() != old["host.crt"].read_text()
    crl = tmp_path / "crl.pem"
    rex.run("ca", "crl", "--out", crl)
    # signed by this host's jail CA (the second certificate of host.crt)
    sh("openssl", "crl", "-in", crl, "-CAfile", new["host.crt"], "-noout")
    revoked = _verify_with_crl(crl, new["cluster.crt"], old["host.crt"])
    assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + revoked.stderr
    good = _verify_with_crl(crl, new["cluster.crt"], new["host.crt"])
    assert good.returncode == 0, good.stdout + good.stderr
    assert rex.run("up", write_rex(tmp_path, "a")).stderr.count("Issuing") == 0
    rex.run("destroy", "a")
    rex.run("ca", "crl", "--out", crl)
    gone = _verify_with_crl(crl, new["cluster.crt"], new["host.crt"])
    assert "certificate revoked" in gone.stdout + gone.stderr
    reasons = {e["reason"] for e in rex.json("ca", "crl")}  # type: ignore[union-attr]
    assert reasons == {"superseded", "cessationOfOperation"}


def test_jails_chain_to_a_user_supplied_intermediate(rex: Rex, tmp_path: Path) -> None:
    require_openssl()
    root = trustme.CA()
    inter = root.create_child_ca()
    (tmp_path / "int.pem").write_bytes(inter.cert_pem.bytes() + root.cert_pem.bytes())
    inter.private_key_pem.write_to_path(str(tmp_path / "int.key"))
    root.cert_pem.write_to_path(str(tmp_path / "root.pem"))
    # refused first, with nothing written: a key that is not the intermediate's
    root.private_key_pem.write_to_path(str(tmp_path / "wrong.key"))
    bad = rex.run(
        "ca",
        "init",
        "--intermediate",
        tmp_path / "int.pem",
        "--key",
        tmp_path / "wrong.key",
        check=False,
    )
    assert bad.returncode == 29 and "does not belong to the certificate" in bad.stderr
    assert not (rex.root / "ca").exists()
    rex.run("ca", "init", "--intermediate", tmp_path / "int.pem", "--key", tmp_path / "int.key")
    rex.run("up", write_rex(tmp_path, "a"))
    rex.run("up", write_rex(tmp_path, "b"))
    a, b = fetch(rex, "a", tmp_path), fetch(rex, "b", tmp_path)
    assert b["cluster.crt"].read_text() == (tmp_path / "root.pem").read_text()
    # the leaf, this host's jail CA, then your intermediate
    assert a["host.crt"].read_text().count("BEGIN CERTIFICATE") == 3
    with s_server(jail_netns(rex, "a"), a["host.crt"], a["host.key"]):
        done = s_client(
            jail_netns(rex, "b"),
            rex.ip_of("a"),
            tmp_path / "root.pem",
            "-verify_hostname",
            "a.jail.rex.internal",
        )
        assert done.returncode == 0, done.stderr


def _verify_with_crl(crl: Path, ca: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` of ``cert`` against ``ca``, checking the CRL."""
    return sh("openssl", "verify", "-crl_check", "-CRLfile", crl, "-CAfile", ca, "-untrusted",
              cert, cert, check=False)  # fmt: skip


def test_the_certificate_is_in_the_jail_before_its_rc_runs(rex: Rex, tmp_path: Path) -> None:
    """Issued before the start (docs/performance.md: a service /etc/rc starts
    reads its certificate then), not after: what /etc/rc saw is the file."""
    rc = tmp_path / "rc"
    rc.write_text("#!/bin/sh\ncat /etc/ssl/rc/host.crt /etc/ssl/rc/host.key > /var/rc-saw 2>&1\n")
    rc.chmod(0o755)
    path = tmp_path / "early.rex"
    path.write_text("BASE busybox\nPROVISION COPY rc /etc/rc\n")
    rex.run("up", path)
    saw = rex.run("exec", "early", "--", "cat", "/var/rc-saw").stdout
    crt = rex.run("exec", "early", "--", "cat", "/etc/ssl/rc/host.crt").stdout
    key = rex.run("exec", "early", "--", "cat", "/etc/ssl/rc/host.key").stdout
    assert "BEGIN CERTIFICATE" in crt and "PRIVATE KEY" in key
    assert saw == crt + key
