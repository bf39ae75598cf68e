"""Fetch + verify + receive of a ~200 MB base, side by side with the raw pipeline,
and a new version of it received as an increment, side by side with its full stream.

    sudo .venv/bin/python bench/bench_fetch.py [--runs 5] [--mb 200] [--change-mb 2]

Builds a base of about --mb MB of real files (binaries and libraries from /usr,
which compress like a FreeBSD base does), publishes it signed with
`rex base publish` (a publisher with its own state directory and dataset),
serves it over HTTPS (trustme CA) from 127.0.0.1 inside a network namespace of
its own, then alternates, --runs times each:
- `rex base fetch URL` with an empty download cache (manifest, signature,
  metadata, download with hashing, bunzip2 | zfs receive -u, rename, properties);
- `curl -s URL.zfs.bz2 | bzcat | zfs receive -u` (no verification at all).
Then the publisher changes about --change-mb MB of the tree (rewrites a few
files, adds one, removes one), makes it version 2 with `rex base import` and
publishes it at the same URL with `--incremental-from 1`; alternating again:
- a host that has version 1 fetches version 2: the increment;
- a host without the base fetches version 2: the full stream.
Prints medians, their ratio and the bytes each downloaded (counted by the
server). Makes its own file pool, namespace and state directories, and removes
them.
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
    ap.add_argument("--change-mb", type=int, default=2, help="MB of files version 2 changes")
    ap.add_argument("--cases", default="raw,increment",
                    help="which comparisons: raw (rex vs curl|bzcat|zfs), increment")  # fmt: skip
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


Rex = Callable[..., subprocess.CompletedProcess[str]]


def rex_in(netns: str, env: dict[str, str]) -> Rex:
    def rex(*a: str | Path) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", sys.executable, "-m", "rexcarcer"]
        return sh(*argv, *a, env=env)

    return rex


def run(args: argparse.Namespace, work: Path, pool: str, netns: str, ca: object) -> None:
    state = work / "state"
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "REX_ROOT": str(state), "REX_DATASET": f"{pool}/rex", "REX_RUNTIME": "linux",
           "REX_CA_BUNDLE": str(work / "ca.pem"), "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    ca.cert_pem.write_to_path(str(work / "ca.pem"))  # type: ignore[attr-defined]
    rex = rex_in(netns, env)
    publisher = rex_in(netns, {**env, "REX_ROOT": str(work / "pubstate"),
                               "REX_DATASET": f"{pool}/pub"})  # fmt: skip
    sign = ("--key", work / "k.pem", "--cert", work / "c.pem")

    tree = work / "tree"
    size = fill(tree, args.mb)
    print(f"base tree: {size / 1e6:.0f} MB of files from /usr", flush=True)
    publisher("base", "import", tree, "big", "--version", "1")
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", work / "k.pem", "-out", work / "c.pem", "-days", "2",
       "-subj", "/CN=bench")  # fmt: skip
    t0 = time.perf_counter()
    publisher("base", "publish", "big", work / "www", *sign)
    publish = time.perf_counter() - t0
    shutil.copytree(work / "www", work / "v1")
    rex("trust", "add", work / "c.pem")
    bz = (work / "www" / "big.zfs.bz2").stat().st_size
    print(f"published: {bz / 1e6:.0f} MB .zfs.bz2 in {publish:.1f} s (rex base publish)")
    sh("zfs", "create", f"{pool}/raw")
    with FileServer(work / "www", netns=netns, tls=ca) as server:
        if "raw" in args.cases:
            full_versus_raw(args, work, pool, netns, server, rex, size, bz)
        if "increment" in args.cases:
            increment_versus_full(args, work, tree, server, rex, publisher, sign)


def full_versus_raw(
    args: argparse.Namespace, work: Path, pool: str, netns: str, server: FileServer, rex: Rex,
    size: int, bz: int,
) -> None:  # fmt: skip
    state = work / "state"
    url = f"{server.url}/big"
    pipeline = (f"curl -s --cacert {work / 'ca.pem'} {url}.zfs.bz2 | bzcat"
                f" | zfs receive -u {pool}/raw/big")  # fmt: skip
    rex_t: list[float] = []
    raw_t: list[float] = []
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
          f"n={args.runs}, {os.cpu_count()} cores)", flush=True)  # fmt: skip


def change(tree: Path, megabytes: int) -> int:
    """Rewrite about ``megabytes`` MB of the tree's files (the largest first, as a
    security update rebuilds a few libraries), add a file and remove one."""
    files = sorted((p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: -p.stat().st_size)  # fmt: skip
    changed, limit = 0, megabytes << 20
    for f in files[1:]:
        if f.stat().st_size > limit - changed:
            continue
        data = bytearray(f.read_bytes())
        for i in range(0, len(data), 4096):  # every block differs, as a rebuilt binary's would
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))
        changed += len(data)
    (tree / "etc").mkdir(exist_ok=True)
    (tree / "etc" / "motd").write_text("version 2\n")
    files[0].unlink()
    return changed


def increment_versus_full(
    args: argparse.Namespace, work: Path, tree: Path, server: FileServer, rex: Rex,
    publisher: Rex, sign: tuple[str | Path, ...],
) -> None:  # fmt: skip
    changed = change(tree, args.change_mb)
    t0 = time.perf_counter()
    publisher("base", "import", tree, "big", "--version", "2")
    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    publisher("base", "publish", "big", work / "www", "--incremental-from", "1", *sign)
    publish = time.perf_counter() - t0
    shutil.copytree(work / "www", work / "v2")
    inc = (work / "v2" / "big.from-1.zfs.bz2").stat().st_size
    full = (work / "v2" / "big.zfs.bz2").stat().st_size
    print(
        f"version 2: {changed / 1e6:.1f} MB of files changed; rex base import (update) "
        f"{imported:.1f} s; rex base publish --incremental-from 1 {publish:.1f} s "
        f"(full {full / 1e6:.1f} MB + increment {inc / 1e6:.2f} MB)",
        flush=True,
    )
    url = f"{server.url}/big"
    state = work / "state"

    def serve(which: str) -> None:
        for f in (work / "www").iterdir():
            f.unlink()
        for f in (work / which).iterdir():
            shutil.copy(f, work / "www" / f.name)

    def have_v1() -> None:
        serve("v1")
        rex("base", "fetch", url)
        serve("v2")
        server.control.sent.clear()

    def fresh() -> None:
        serve("v2")
        server.control.sent.clear()

    def drop() -> None:
        rex("base", "rm", "big")
        shutil.rmtree(state / "cache")

    got: dict[str, tuple[list[float], list[int]]] = {"increment": ([], []), "full": ([], [])}
    for i in range(args.runs + 1):  # the first round warms up, not counted
        order = [("increment", have_v1), ("full", fresh)]
        for kind, prepare in order if i % 2 == 0 else order[::-1]:
            prepare()
            t0 = time.perf_counter()
            done = rex("base", "fetch", url)
            dt = time.perf_counter() - t0
            assert ("as the increment from 1" in done.stderr) == (kind == "increment"), done.stderr
            sent = server.control.bytes_sent(".zfs.bz2")
            drop()
            if i:
                got[kind][0].append(dt)
                got[kind][1].append(sent)
        if i:
            print(
                f"  run {i}: increment {got['increment'][0][-1]:.2f} s, "
                f"full {got['full'][0][-1]:.2f} s",
                flush=True,
            )
    ti, tf = (statistics.median(got[k][0]) for k in ("increment", "full"))
    bi, bf = (statistics.median(got[k][1]) for k in ("increment", "full"))
    print(f"v1 -> v2 as the increment   median {ti:6.2f} s  {bi / 1e6:8.2f} MB downloaded")
    print(f"v2 as the full stream       median {tf:6.2f} s  {bf / 1e6:8.2f} MB downloaded")
    print(f"increment/full: time {ti / tf:.2f}x, bytes {bi / bf:.4f}x  (n={args.runs})")


if __name__ == "__main__":
    main()
