"""Fetch + verify + receive of a ~200 MB base, side by side with the raw pipeline.

    sudo .venv/bin/python bench/bench_fetch.py [--runs 5] [--mb 200]

Builds a base of about --mb MB of real files (binaries and libraries from /usr,
which compress like a FreeBSD base does), publishes it signed with
`rex base publish`, serves it over HTTPS (trustme CA) from 127.0.0.1 inside a
network namespace of its own, then alternates, --runs times each:
- `rex base fetch URL` with an empty download cache (manifest, signature,
  metadata, download with hashing, bunzip2 | zfs receive -u, rename, properties);
- `curl -s URL.zfs.bz2 | bzcat | zfs receive -u` (no verification at all).
Prints medians and their ratio. Makes its own file pool, namespace and state
directory, and removes them.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.base_server import FileServer  # noqa: E402


def sh(*argv: str | Path, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        check=check,
        capture_output=True,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


def fill(dest: Path, megabytes: int) -> int:
    """Copy regular files from /usr until about ``megabytes`` MB."""
    total, limit = 0, megabytes << 20
    for top in ("/usr/lib", "/usr/bin", "/usr/libexec", "/usr/share"):
        for dirpath, _dirs, names in os.walk(top):
            for n in sorted(names):
                src = Path(dirpath) / n
                if src.is_symlink() or not src.is_file():
                    continue
                size = src.stat().st_size
                if total + size > limit:
                    continue
                target = dest / src.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                total += size
                if total > limit - (1 << 20):
                    return total
    return total


def timed(fn: Callable[[], object], after: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    after()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--verbose", action="store_true", help="show rex's progress of each fetch")
    args = ap.parse_args()
    import trustme

    work = Path(tempfile.mkdtemp(prefix="rexbench-"))
    pool, netns = f"rexbf{uuid.uuid4().hex[:6]}", f"rexbf-{uuid.uuid4().hex[:6]}"
    sh("truncate", "-s", "4G", work / "pool.img")
    sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", pool, work / "pool.img")
    sh("ip", "netns", "add", netns)
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    try:
        run(args, work, pool, netns, trustme.CA())
    finally:
        for _ in range(30):
            if sh("zpool", "destroy", "-f", pool, check=False).returncode == 0:
                break
            time.sleep(0.2)
        sh("ip", "netns", "del", netns, check=False)
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, pool: str, netns: str, ca: object) -> None:
    state = work / "state"
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "REX_ROOT": str(state), "REX_DATASET": f"{pool}/rex", "REX_RUNTIME": "linux",
           "REX_CA_BUNDLE": str(work / "ca.pem"), "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    ca.cert_pem.write_to_path(str(work / "ca.pem"))  # type: ignore[attr-defined]

    def rex(*a: str | Path) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", sys.executable, "-m", "rexcarcer"]
        return sh(*argv, *a, env=env)

    tree = work / "tree"
    size = fill(tree, args.mb)
    print(f"base tree: {size / 1e6:.0f} MB of files from /usr", flush=True)
    rex("base", "import", tree, "big", "--version", "1")
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", work / "k.pem", "-out", work / "c.pem", "-days", "2",
       "-subj", "/CN=bench")  # fmt: skip
    t0 = time.perf_counter()
    rex("base", "publish", "big", work / "www", "--key", work / "k.pem", "--cert", work / "c.pem")
    publish = time.perf_counter() - t0
    rex("base", "rm", "big")
    rex("trust", "add", work / "c.pem")
    bz = (work / "www" / "big.zfs.bz2").stat().st_size
    print(f"published: {bz / 1e6:.0f} MB .zfs.bz2 in {publish:.1f} s (rex base publish)")
    sh("zfs", "create", f"{pool}/raw")
    with FileServer(work / "www", netns=netns, tls=ca) as server:
        url = f"{server.url}/big"
        pipeline = (f"curl -s --cacert {work / 'ca.pem'} {url}.zfs.bz2 | bzcat"
                    f" | zfs receive -u {pool}/raw/big")  # fmt: skip
        rex_t, raw_t = [], []
        last: list[subprocess.CompletedProcess[str]] = []

        def fetch() -> None:
            last.insert(0, rex("base", "fetch", url))

        def drop() -> None:
            rex("base", "rm", "big")
            shutil.rmtree(state / "cache")

        def raw() -> None:
            sh("nsenter", f"--net=/run/netns/{netns}", "--", "sh", "-ec", pipeline)

        def raw_drop() -> None:
            sh("zfs", "destroy", "-r", f"{pool}/raw/big")

        timed(fetch, drop), timed(raw, raw_drop)  # warm-up, not counted
        for i in range(args.runs):
            # alternate which goes first, so neither always runs on a warmer machine
            order = [(rex_t, fetch, drop), (raw_t, raw, raw_drop)]
            for times, fn, after in order if i % 2 == 0 else order[::-1]:
                times.append(timed(fn, after))
            print(f"  run {i + 1}: rex {rex_t[-1]:.2f} s, raw {raw_t[-1]:.2f} s", flush=True)
            if args.verbose:
                print(last[0].stderr)
    r, p = statistics.median(rex_t), statistics.median(raw_t)
    print(f"rex base fetch (verify + receive)     median {r:6.2f} s  (min {min(rex_t):.2f})")
    print(f"curl | bzcat | zfs receive -u (raw)   median {p:6.2f} s  (min {min(raw_t):.2f})")
    print(f"ratio rex/raw: {r / p:.2f}x  ({bz / 1e6:.0f} MB compressed, {size / 1e6:.0f} MB tree, "
          f"n={args.runs}, {os.cpu_count()} cores)")  # fmt: skip


if __name__ == "__main__":
    main()
