"""``-o json`` of the commands that need the real host (ZFS streams, unbound,
rsyslog, etcd), validated against docs/schemas/ like the unit layer's
(tests/unit/test_json_output.py checks that each schema is validated in one of
the two)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.base_support import openssl_signer
from tests.capability import require_tools
from tests.etcd_support import local_cluster, require_etcd
from tests.integration.conftest import Rex, copy_example
from tests.integration.test_bases import release_dir
from tests.schemas import validate


def test_bases_trust_and_the_jailer_services(rex: Rex, busybox_root: Path, tmp_path: Path) -> None:
    require_tools("unbound", "unbound-checkconf", "rsyslogd")
    made = rex.json("base", "import", str(busybox_root), "bb2", "--version", "2")
    validate("base-import", made)
    publisher = openssl_signer(tmp_path / "keys", "publisher", "ec")
    second = openssl_signer(tmp_path / "keys", "second", "rsa")
    site = tmp_path / "site"
    published = rex.json("base", "publish", "bb2", str(site), "--key", str(publisher.key),
                         "--cert", str(publisher.cert))  # fmt: skip
    validate("base-publish", published)
    signed = rex.json("base", "sign", str(site / "bb2"), "--key", str(second.key),
                      "--cert", str(second.cert))  # fmt: skip
    validate("base-sign", signed)
    validate("trust-add", rex.json("trust", "add", str(publisher.cert)))
    validate("trust-ls", rex.json("trust", "ls"))
    rex.run("base", "rm", "bb2")
    fetched = rex.json("base", "fetch", f"file://{site}/bb2", f"sha256:{published['digest']}")
    validate("base-fetch", fetched)
    assert fetched["signer"] == [publisher.fingerprint]  # the untrusted one does not count
    rel = release_dir(tmp_path / "rel", busybox_root)
    validate("base-import-release",
             rex.json("base", "import-release", f"file://{rel}/MANIFEST", "fbsd"))  # fmt: skip

    validate("host-setup", rex.json("host", "setup", "--no-start"))
    detached = rex.json("host", "serve", "--detach")
    try:
        validate("host-serve", detached)
        rex.run("up", copy_example(tmp_path) / "hello.rex")
        report = rex.json("dns", "check")
        validate("dns-check", report)
        assert report["clean"] is True
    finally:
        stopped = rex.json("host", "serve", "--stop")
    validate("host-serve", stopped)
    assert detached["pid"] in stopped["stopped"]


def test_cluster(tmp_path: Path) -> None:
    require_etcd()
    etcd = local_cluster(tmp_path)
    etcd.start()
    try:
        etcd.wait_healthy()
        url = etcd.endpoints[0]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REX_ROOT": str(tmp_path / "h1"),
               "REX_HOST": "h1", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip

        def rex(*args: str) -> object:
            done = subprocess.run([sys.executable, "-m", "rexcarcer", "-o", "json", *args],
                                  capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        validate("cluster-init", rex("cluster", "init", "--etcd", url, "--cidr", "203.0.113.0/24"))
        validate("cluster-join", rex("cluster", "join", "--etcd", url, "--address", "127.0.0.1"))
        token = rex("cluster", "token", "--ttl", "10m")
        validate("cluster-token", token)
        validate("cluster-renew", rex("cluster", "renew"))
        hosts = rex("hosts")
        validate("hosts", hosts)
        assert [h["name"] for h in hosts] == ["h1"]  # type: ignore[attr-defined]
        validate("cluster-leave", rex("cluster", "leave"))
    finally:
        etcd.stop()
