"""Identity and log figures for the Linux backend.

    sudo .venv/bin/python bench/bench_identity.py [--runs N] [--messages M]

Measures (medians, one run of this script):
- what `rex up` spends on a jail's identity: the one-time import of
  ``cryptography`` in the rex process, then per jail the whole identity hook
  (load the CA, make the key, sign, record, write /etc/ssl/rc into the jail's
  zfs-fuse dataset), and its parts: key generation, signing, writing;
- `rex up` of a cached image, for scale (identity and log hooks included);
- syslog delivery: from a shell in a jail running ``logger`` to the line in the
  host's per-jail file, through busybox syslogd -R and Debian's rsyslogd (the
  collector rex configures, started in this script's network namespace).
Makes its own file pool, namespace and state directory, and removes them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_lifecycle import REPO, cleanup, fmt, sh, timed

Rex = Callable[..., subprocess.CompletedProcess[str]]


def fine(name: str, xs: list[float]) -> str:
    """Like fmt, for figures well under a millisecond."""
    med = statistics.median(xs) * 1000
    return f"{name:52} median {med:8.3f} ms  (min {min(xs) * 1000:7.3f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--messages", type=int, default=200)
    args = ap.parse_args()
    tok = "rexi" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="rexbench-"))
    sh("truncate", "-s", "2G", work / "pool.img")
    sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", tok, work / "pool.img")
    sh("ip", "netns", "add", tok)
    env = {
        "PATH": os.environ["PATH"],
        "REX_ROOT": str(work / "state"),
        "REX_DATASET": f"{tok}/rex",
        "REX_SUBNET": "203.0.113.0/24",
        "REX_RUNTIME": "linux",
    }
    rex_bin = [str(Path(sys.executable).parent / "rex")]

    def rex(*a: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/run/netns/{tok}", "--", *rex_bin, *map(str, a)]
        return subprocess.run(argv, env=env, check=check, capture_output=True, text=True)

    collector: subprocess.Popen[bytes] | None = None
    try:
        sh(REPO / "examples" / "make-busybox-base.sh", work / "bb")
        rex("base", "import", work / "bb", "busybox", "--version", "1")
        rexfile = work / "a.rex"
        rexfile.write_text("BASE busybox\nPROVISION RUN true\nSERVICE web PORT 443\n")
        rex("build", rexfile)
        collector = start_collector(env, tok)
        results = identity(rex, rexfile, env, args.runs)
        results += delivery(rex, env, args.messages)
    finally:
        if collector is not None:
            collector.terminate()  # ours, by PID
            collector.wait()
        cleanup(rex, tok, work)
    for line in results:
        print(line)


def start_collector(env: dict[str, str], tok: str) -> subprocess.Popen[bytes]:
    from rexcarcer.config import load_config
    from rexcarcer.logs import collector, service

    config = load_config(environ=env)
    service.write_config(config, [])
    paths = service.paths_for(config)
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{tok}", "--", *collector.run_argv(paths)]
    )
    while not service.bound(proc.pid, "203.0.113.1", 514):
        assert proc.poll() is None, "rsyslogd exited"
        time.sleep(0.001)
    return proc


def identity(rex: Rex, rexfile: Path, env: dict[str, str], n: int) -> list[str]:
    out = []
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def python(code: str) -> None:  # with .pyc files, as an installed rex runs
        subprocess.run([sys.executable, "-c", code], env=cached, check=True)

    python("import rexcarcer.pki.hook, rexcarcer.pki.issue, rexcarcer.pki.crl")  # write .pyc
    py = timed(lambda: python("import rexcarcer.pki.hook"), n)  # no cryptography
    imp = timed(
        lambda: python("import rexcarcer.pki.hook, rexcarcer.pki.issue, rexcarcer.pki.crl"), n
    )
    out.append(fmt("floor: python -c 'import rexcarcer.pki.hook'", py))
    out.append(fmt("  + import cryptography (pki.issue, pki.crl)", imp))
    out.append(
        f"{'  => one-time import cost per rex process':52} "
        f"{(statistics.median(imp) - statistics.median(py)) * 1000:8.1f} ms"
    )
    up = timed(lambda: rex("up", rexfile), n, between=lambda: rex("destroy", "a"))
    out.append(fmt("rex up (cached image -> running jail, all hooks)", up))
    rex("up", rexfile)
    out += in_process(env, n)
    out += logs_hook(env, n)
    return out


def logs_hook(env: dict[str, str], n: int) -> list[str]:
    """What the logs hook adds to a start: its files and table on the host, and
    rc.pre in the jail (start busybox syslogd, wait for /dev/log)."""
    import json

    from rexcarcer.engine.host import open_host

    from rexcarcer.config import load_config
    from rexcarcer.engine import jails
    from rexcarcer.logs.hook import LogHook

    host = open_host(load_config(environ=env))
    try:
        rec = jails.record(host, "a")
        assert rec is not None
        spec = jails.spec_for(host, rec)
        prep = timed(lambda: LogHook().prepare(host, rec, spec), n)
    finally:
        host.close()
    info = json.loads((Path(env["REX_ROOT"]) / "run" / "a.json").read_text())
    enter = [
        "nsenter",
        f"--target={info['init_pid']}",
        "--pid",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--root",
        "--wd",
    ]
    floor = timed(lambda: sh(*enter, "/bin/true"), n)
    restart = "killall syslogd; usleep 50000; rm -f /dev/log"  # its zombie may linger
    rc_pre: list[float] = []
    for _ in range(n):
        sh(*enter, "/bin/sh", "-c", restart, check=False)
        t0 = time.perf_counter()
        sh(*enter, "/bin/sh", "/etc/rexcarcer/rc.pre")
        rc_pre.append(time.perf_counter() - t0 - statistics.median(floor))
    return [
        fine("logs hook on the host (rc.pre, table, reload)", prep),
        fine("rc.pre in the jail (syslogd up, /dev/log there)", rc_pre),
    ]


def in_process(env: dict[str, str], n: int) -> list[str]:
    """The identity hook and its parts, in this process, on jail a's real root."""
    from rexcarcer.engine.host import open_host

    from rexcarcer.config import load_config
    from rexcarcer.engine import jails
    from rexcarcer.pki import ca, identity, issue, registry
    from rexcarcer.pki.hook import ensure_identity, install
    from rexcarcer.pki.keys import generate
    from rexcarcer.pki.layout import CaPaths

    host = open_host(load_config(environ=env))
    try:
        rec = jails.record(host, "a")
        assert rec is not None
        spec = jails.spec_for(host, rec)

        def fresh() -> None:  # first issuance, as `rex up` of a new jail does it
            registry.revoke(host.store, "a", "superseded")
            t0 = time.perf_counter()
            assert ensure_identity(host, rec, spec) == "it has no certificate yet"
            hook.append(time.perf_counter() - t0)

        hook: list[float] = []
        for _ in range(n):
            fresh()
        authority = ca.load(CaPaths.under(host.config.root))
        ident = identity.identity_for(rec, host.config.zone)
        now = ca.utcnow()
        keygen = timed(generate, n)
        sign = timed(lambda: issue.issue(authority, ident, now), n)  # keygen + sign
        issued = issue.issue(authority, ident, now)
        write = timed(lambda: install(spec, issued), n)
        load = timed(lambda: ca.load(CaPaths.under(host.config.root)), n)
        keep = timed(lambda: ensure_identity(host, rec, spec), n)  # a restart: nothing to do
    finally:
        host.close()
    return [
        fine("identity hook, first issuance (per jail)", hook),
        fine("  load the CA (key, certificates, ca.json)", load),
        fine("  ECDSA P-256 key generation", keygen),
        fine("  key generation + signing the certificate", sign),
        fine("  write host.key/host.crt/cluster.crt (zfs-fuse)", write),
        fine("identity hook at a restart (certificate still good)", keep),
    ]


def delivery(rex: Rex, env: dict[str, str], messages: int) -> list[str]:
    """logger in jail a -> the line in $REX_ROOT/log/jails/a.log."""
    import json

    info = json.loads((Path(env["REX_ROOT"]) / "run" / "a.json").read_text())
    log = Path(env["REX_ROOT"]) / "log" / "jails" / "a.log"
    shell = subprocess.Popen(
        ["nsenter", f"--target={info['init_pid']}", "--pid", "--mount", "--uts", "--ipc", "--net",
         "--root", "--wd", "/bin/sh", "-c", "while read i; do logger -t bench \"m$i\"; done"],
        stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert shell.stdin is not None
    lat = []
    try:
        for i in range(messages):
            offset = log.stat().st_size if log.exists() else 0
            t0 = time.perf_counter()
            shell.stdin.write(f"{i}\n")
            shell.stdin.flush()
            while not _has(log, offset, f"bench: m{i}\n"):
                if time.perf_counter() - t0 > 5:
                    raise SystemExit(f"message {i} did not arrive")
                time.sleep(0.0001)
            lat.append(time.perf_counter() - t0)
    finally:
        shell.stdin.close()
        shell.wait()
    p95 = sorted(lat)[int(len(lat) * 0.95)] * 1000
    return [
        fine("syslog: logger in a jail -> line in the host's file", lat) + f"  p95 {p95:.2f} ms"
    ]


def _has(path: Path, offset: int, text: str) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return text.encode() in f.read()
    except OSError:
        return False


if __name__ == "__main__":
    if shutil.which("rsyslogd") is None:
        raise SystemExit("rsyslogd is needed (apt-get install rsyslog)")
    main()
