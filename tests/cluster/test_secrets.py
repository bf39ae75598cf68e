"""Secrets on the three-host test bed: `rex secret set` on h1 seals the value to
every host that has published its key (the agents do, when they start); a jail
placed on h2 reads it; etcd never holds it in clear; a host with no copy is
refused before anything changes."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from tests.cluster.conftest import ClusterHost
from tests.cluster.test_placement import agents  # noqa: F401  (the module's agents)
from tests.integration.conftest import wait_until


def _etcd(h: ClusterHost, *args: str) -> subprocess.CompletedProcess[str]:
    return h.ns("env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={h.endpoints[0]}", *args)


def _set(h: ClusterHost, name: str, value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(h.argv("-o", "json", "secret", "set", name), input=value, text=True,
                          env=h.env, capture_output=True, timeout=60)  # fmt: skip


def test_a_secret_sealed_in_etcd_opens_on_its_host_only(
    agents: list[ClusterHost],  # noqa: F811
    tmp_path: Path,
) -> None:
    h1, _h2, h3 = agents
    prefix = "/rexcarcer/v1/sealkeys/"
    wait_until(lambda: all(f"{prefix}{h.name}" in _etcd(h1, "get", "--prefix", "--keys-only",
               prefix).stdout for h in agents), "every agent publishing its key")  # fmt: skip
    # h3's key is withdrawn (as if its agent had never run): it gets no copy
    assert _etcd(h1, "del", f"{prefix}h3").returncode == 0
    value = f"cluster-s3cret-{uuid.uuid4().hex}"
    done = _set(h1, "token", value)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hosts"] == ["h1", "h2"]
    assert json.loads(done.stdout)["left_out"] == ["h3"]
    assert value not in done.stdout + done.stderr
    dump = _etcd(h1, "get", "--prefix", "/").stdout
    assert "/rexcarcer/v1/secrets/token" in dump and value not in dump
    app = tmp_path / "sec.rex"
    app.write_text("BASE busybox\nSECRET token\n")
    try:
        refused = h1.rex("up", app, "--host", "h3", check=False)
        assert refused.returncode == 70, refused.stderr
        assert "host h3 cannot open secret token" in refused.stderr
        assert "(h1, h2)" in refused.stderr and value not in refused.stderr
        assert "sec" not in {j["name"] for j in json.loads(h1.rex("-o", "json", "ls").stdout)}
        info = json.loads(h1.rex("-o", "json", "up", app, "--host", "h2").stdout)
        assert info["host"] == "h2" and info["state"] == "running"
        # through h2's agent: the value was opened on h2, with h2's key
        assert h1.rex("exec", "sec", "--", "cat", "/run/secrets/token").stdout == value
        listed = h3.rex("-o", "json", "secret", "ls").stdout
        assert json.loads(listed)[0]["hosts"] == ["h1", "h2"] and value not in listed
        record = json.loads(_etcd(h1, "get", "--print-value-only",
                                  "/rexcarcer/v1/jails/sec").stdout)  # fmt: skip
        assert record["secrets"] == ["token"]
    finally:
        h1.rex("destroy", "sec", check=False)
        h1.rex("secret", "rm", "token", check=False)
