"""What LIMIT and SECRET cost on the Linux backend, in one run of this script.

    sudo .venv/bin/python bench/bench_limits.py [--runs N]

`rex up` of a cached image to a running jail (destroyed between runs), for four
definitions that differ only in these lines, measured in turns (plain, limits,
secret, both, plain, ...) so that a drift of the machine hits all alike:

    plain     BASE busybox
    limits    + LIMIT memory 256M, cpu 1, pids 500, openfiles 4096
    secret    + SECRET token (a 32-byte value)
    both      all of the above

and `rex exec J -- true` in a plain and a limited jail (the exec joins the
jail's cgroups and sets its rlimit first). Every jail has cgroups of its own,
LIMIT or not; "limits" adds the limit values and RLIMIT_NOFILE, "secret" the
tmpfs and the handshake with the jail's init. Makes its own file pool,
namespace and state directory, and removes them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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
LIMITS = "LIMIT memory 256M\nLIMIT cpu 1\nLIMIT pids 500\nLIMIT openfiles 4096\n"
VARIANTS = {
    "plain": "BASE busybox\n",
    "limits": "BASE busybox\n" + LIMITS,
    "secret": "BASE busybox\nSECRET token\n",
    "both": "BASE busybox\n" + LIMITS + "SECRET token\n",
}


def sh(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True)


def row(name: str, xs: list[float], base: float | None = None) -> str:
    med = statistics.median(xs) * 1000
    delta = f"{med - base * 1000:+8.1f} ms" if base is not None else f"{'':>11}"
    return f"{name:34} {med:9.1f} ms {min(xs) * 1000:9.1f} ms {delta}   n={len(xs)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    tok = "rexb" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="rexbench-"))
    sh("truncate", "-s", "2G", work / "pool.img")
    sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", tok, work / "pool.img")
    sh("ip", "netns", "add", tok)
    env = {"PATH": os.environ["PATH"], "REX_ROOT": str(work / "state"), "REX_DATASET": f"{tok}/rex",
           "REX_SUBNET": "203.0.113.0/24", "REX_RUNTIME": "linux"}  # fmt: skip
    rex_bin = [sys.executable, "-m", "rexcarcer"]

    def rex(*a: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/run/netns/{tok}", "--", *rex_bin, *map(str, a)]
        return subprocess.run(argv, env=env, check=True, capture_output=True, text=True,
                              input=stdin)  # fmt: skip

    try:
        sh(REPO / "examples" / "make-busybox-base.sh", work / "bb")
        rex("base", "import", work / "bb", "busybox", "--version", "1")
        rex("secret", "set", "token", stdin="x" * 32)
        files = {}
        for name, text in VARIANTS.items():
            files[name] = work / f"{name}.rex"
            files[name].write_text(text)
        lines = run_all(rex, files, args.runs)
    finally:
        cleanup(rex, tok, work)
    print(f"{'':34} {'median':>12} {'min':>12} {'vs plain':>11}")
    for line in lines:
        print(line)


def run_all(rex: Callable[..., subprocess.CompletedProcess[str]], files: dict[str, Path],
            runs: int) -> list[str]:  # fmt: skip
    ups: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(runs):
        for name, path in files.items():
            t0 = time.perf_counter()
            rex("up", path)
            ups[name].append(time.perf_counter() - t0)
            rex("destroy", name)
    base = statistics.median(ups["plain"])
    out = [row(f"rex up ({name})", xs, None if name == "plain" else base)
           for name, xs in ups.items()]  # fmt: skip
    rex("up", files["plain"])
    rex("up", files["limits"])
    execs: dict[str, list[float]] = {"plain": [], "limits": []}
    for _ in range(runs):
        for name in execs:
            t0 = time.perf_counter()
            rex("exec", name, "--", "true")
            execs[name].append(time.perf_counter() - t0)
    ebase = statistics.median(execs["plain"])
    out.append(row("rex exec J -- true (plain)", execs["plain"]))
    out.append(row("rex exec J -- true (limits)", execs["limits"], ebase))
    usage = json.loads(rex("-o", "json", "ls").stdout)
    out.append("usage of the limited jail: " + json.dumps(
        next(j["usage"] for j in usage if j["name"] == "limits")))  # fmt: skip
    return out


def cleanup(rex: Callable[..., subprocess.CompletedProcess[str]], tok: str, work: Path) -> None:
    try:
        names = [j["name"] for j in json.loads(rex("-o", "json", "ls").stdout)]
        if names:
            rex("destroy", *names)
    except subprocess.CalledProcessError as exc:
        print(f"cleanup: {exc.stderr}", file=sys.stderr)
    sh("zpool", "destroy", "-f", tok, check=False)
    sh("ip", "netns", "del", tok, check=False)
    token = hashlib.sha256(str(work / "state").encode()).hexdigest()[:6]
    for controller in ("memory", "cpu", "cpuacct", "cpu,cpuacct", "pids"):
        parent = Path("/sys/fs/cgroup") / controller / "rexcarcer" / f"rex-{token}"
        with contextlib.suppress(OSError):
            parent.rmdir()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
