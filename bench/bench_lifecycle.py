"""Lifecycle figures for the Linux backend, side by side with their floors.

    sudo .venv/bin/python bench/bench_lifecycle.py [--runs N] [--jails 200]

Measures (medians over N runs, in one run of this script so the machine's
state is the same for all):
- `rex up` of a cached image to a running jail (destroy between runs);
- the floor for that: `zfs clone` + `unshare ... chroot ROOT /bin/true` + destroy;
- `systemd-nspawn` running /bin/true on the same root filesystem;
- `rex exec NAME -- true` against the raw `nsenter ... true`;
- `rex ls` with --jails jails, and `rex --help`.
Makes its own file pool, namespace and state directory, and removes them.
"""

from __future__ import annotations

import argparse
import json
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


def sh(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True)


def timed(
    fn: Callable[[], object], runs: int, between: Callable[[], object] | None = None
) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if between:
            between()
    return out


def fmt(name: str, xs: list[float], base: float | None = None) -> str:
    med = statistics.median(xs) * 1000
    ratio = f"  {med / (base * 1000):5.1f}x floor" if base else ""
    return f"{name:52} median {med:8.1f} ms  (min {min(xs) * 1000:7.1f}, n={len(xs)}){ratio}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--jails", type=int, default=200)
    args = ap.parse_args()
    tok = "rexb" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="rexbench-"))
    sh("truncate", "-s", "4G", work / "pool.img")
    sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", tok, work / "pool.img")
    sh("ip", "netns", "add", tok)
    env = {"PATH": os.environ["PATH"], "REX_ROOT": str(work / "state"), "REX_DATASET": f"{tok}/rex",
           "REX_SUBNET": "203.0.113.0/24", "REX_RUNTIME": "linux"}  # fmt: skip
    rex_bin = [str(Path(sys.executable).parent / "rex")]

    def rex(*a: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/run/netns/{tok}", "--", *rex_bin, *map(str, a)]
        return subprocess.run(argv, env=env, check=check, capture_output=True, text=True)

    try:
        sh(REPO / "examples" / "make-busybox-base.sh", work / "bb")
        rex("base", "import", work / "bb", "busybox", "--version", "1")
        rexfile = work / "b.rex"
        rexfile.write_text("BASE busybox\nPROVISION RUN echo built > /built\nSERVICE s PORT 1\n")
        rex("build", rexfile)
        results = run_all(rex, rexfile, tok, work, args)
    finally:
        cleanup(rex, tok, work)
    for line in results:
        print(line)


def run_all(rex: Callable[..., subprocess.CompletedProcess[str]], rexfile: Path, tok: str,
            work: Path, args: argparse.Namespace) -> list[str]:  # fmt: skip
    n = args.runs
    out = []
    up = timed(lambda: rex("up", rexfile), n, between=lambda: rex("destroy", "b"))
    img = rex("build", rexfile).stdout.strip()
    root = work / "mnt" / "floor"

    def floor() -> None:
        sh("zfs", "clone", "-o", f"mountpoint={root}", img, f"{tok}/floor")
        sh("unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
           f"--mount-proc={root}/proc", "chroot", root, "/bin/true")  # fmt: skip
        sh("zfs", "umount", f"{tok}/floor")
        while sh("zfs", "destroy", f"{tok}/floor", check=False).returncode != 0:
            time.sleep(0.05)

    fl = timed(floor, n)
    out.append(fmt("floor: zfs clone + unshare chroot true + destroy", fl))
    out.append(fmt("rex up (cached image -> running jail)", up, statistics.median(fl)))
    if shutil.which("systemd-nspawn"):
        bb = str(work / "bb")
        ns = timed(lambda: sh("systemd-nspawn", "-D", bb, "--private-network", "--register=no",
                              "--keep-unit", "-q", "/bin/true"), n)  # fmt: skip
        out.append(fmt("systemd-nspawn -D ROOT --private-network /bin/true", ns))
    rex("up", rexfile)
    ex = timed(lambda: rex("exec", "b", "--", "true"), n)
    info = json.loads((work / "state" / "run" / "b.json").read_text())
    raw = timed(lambda: sh("nsenter", f"--target={info['init_pid']}", "--pid", "--mount", "--uts",
                           "--ipc", "--net", "--root", "--wd", "/bin/true"), n)  # fmt: skip
    out.append(fmt("floor: nsenter --target J ... /bin/true", raw))
    out.append(fmt("rex exec b -- true", ex, statistics.median(raw)))
    for i in range(args.jails - 1):
        rex("up", rexfile, "--name", f"j{i}")
    ls = timed(lambda: rex("ls"), n)
    out.append(fmt(f"rex ls ({args.jails} jails)", ls))
    py = timed(lambda: sh(sys.executable, "-c", "pass"), n)
    hp = timed(lambda: rex("--help"), n)
    out.append(fmt("floor: python -c pass", py))
    out.append(fmt("rex --help", hp, statistics.median(py)))
    return out


def cleanup(rex: Callable[..., subprocess.CompletedProcess[str]], tok: str, work: Path) -> None:
    listing = rex("-o", "json", "ls", check=False)
    if listing.returncode == 0:
        names = [j["name"] for j in json.loads(listing.stdout)]
        if names:
            rex("destroy", *names, check=False)
    sh("zpool", "destroy", "-f", tok, check=False)
    sh("ip", "netns", "del", tok, check=False)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
