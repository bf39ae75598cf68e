"""`rex move` of a jail with a volume of incompressible data, against a raw
`zfs send | zfs receive` of the same bytes, on the cluster test bed.

    sudo .venv/bin/python bench/bench_move.py [--sizes 100M,1G]

For each size: a jail on h1 (tests/cluster/test_move.py's .rex: BASE busybox,
a VOLUME) gets that much data from /dev/urandom in its volume; the same bytes
are copied into a dataset of their own and snapshotted; then, in this order,
the raw `zfs send SNAP | zfs receive` (on the machine, one pipe, the same
zfs-fuse), `rex move NAME --to h2` (run on h1: h1's agent streams the root and
the volume to h2's agent over mutual TLS, h2 receives and starts it) and the
raw pipe again. The moved volume's SHA-256 is checked on h2. The table: size,
rex move wall time, the raw pipe's times, rex move / the raw mean.

The test bed is tests/cluster/conftest.py's (three hosts in network namespaces,
a 3-member etcd, each host's agent and unbound, from tests/cluster/test_move.py's
`bed`); this script runs pytest on itself, with a pool file big enough for the
sizes (REX_TEST_POOL_SIZE), after checking the disk holding it has the room.
Root; on a shared machine under the test lock:
`flock -o /run/rexcarcer/tests.lock .venv/bin/python bench/bench_move.py`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probestats import parse_size, size_text, table
from tests.cluster.conftest import ClusterHost, testbed, zfs_hosts  # noqa: F401
from tests.cluster.test_move import REX, bed  # noqa: F401
from tests.conftest import busybox_root, pool  # noqa: F401

SIZES_ENV, OUT_ENV = "REX_BENCH_MOVE_SIZES", "REX_BENCH_MOVE_OUT"
LONG = 3600.0  # only against a hung command: 1 GiB on zfs-fuse takes minutes at most


def _rex(h: ClusterHost, *args: str, timeout: float = LONG) -> subprocess.CompletedProcess[str]:
    """``h.rex`` without its 300 s bound (a big volume takes longer)."""
    done = subprocess.run(h.argv(*args), capture_output=True, text=True, env=h.env,
                          timeout=timeout)  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"[{h.name}] rex {' '.join(args)} exited {done.returncode}\n"
                             f"{done.stdout}\n{done.stderr}")  # fmt: skip
    return done


def _zfs(*args: str) -> str:
    done = subprocess.run(["zfs", *args], capture_output=True, text=True, timeout=LONG)
    if done.returncode != 0:
        raise AssertionError(f"zfs {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def _destroy(dataset: str) -> None:
    for _ in range(100):  # zfs-fuse answers "busy" for a moment after a receive
        done = subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True, text=True)
        if done.returncode == 0 or "does not exist" in done.stderr:
            return
        time.sleep(0.1)
    raise AssertionError(f"zfs destroy -r {dataset}: {done.stderr}")


def send_receive(snapshot: str, dest: str) -> float:
    """``zfs send SNAPSHOT | zfs receive DEST``: seconds from before the first
    fork to after the second wait; DEST is destroyed afterwards."""
    t0 = time.perf_counter()
    send = subprocess.Popen(["zfs", "send", snapshot], stdout=subprocess.PIPE)
    recv = subprocess.Popen(["zfs", "receive", dest], stdin=send.stdout)
    assert send.stdout is not None
    send.stdout.close()  # the receiver holds the pipe now: a dead one stops the sender
    statuses = (recv.wait(timeout=LONG), send.wait(timeout=LONG))
    took = time.perf_counter() - t0
    if statuses != (0, 0):
        raise AssertionError(f"zfs send {snapshot} | zfs receive {dest}: exit {statuses}")
    _destroy(dest)
    return took


def _sha256(h: ClusterHost, jail: str) -> str:
    return _rex(h, "exec", jail, "--", "sha256sum", "/srv/data/blob").stdout.split()[0]


def measure(h1: ClusterHost, h2: ClusterHost, size: int, src: Path) -> list[str]:
    name = f"mv{size_text(size).lower()}"
    poolname = h1.dataset.split("/")[0]
    raw_src, raw_dst = f"{poolname}/rawsrc-{name}", f"{poolname}/rawdst-{name}"
    _rex(h1, "up", str(src), "--name", name, "--host", "h1")
    try:
        fill = (f"dd if=/dev/urandom of=/srv/data/blob bs=1048576 count={size >> 20} "
                "2>/dev/null && sha256sum /srv/data/blob")  # fmt: skip
        digest = _rex(h1, "exec", name, "--", "sh", "-c", fill).stdout.split()[0]
        volume = f"{h1.dataset}/volumes/{name}.data"
        mnt = _zfs("get", "-H", "-o", "value", "mountpoint", volume).strip()
        _zfs("create", raw_src)
        raw_mnt = _zfs("get", "-H", "-o", "value", "mountpoint", raw_src).strip()
        shutil.copyfile(Path(mnt) / "blob", Path(raw_mnt) / "blob")
        _zfs("snapshot", f"{raw_src}@raw")
        raw = [send_receive(f"{raw_src}@raw", raw_dst)]
        t0 = time.perf_counter()
        info = json.loads(_rex(h1, "-o", "json", "move", name, "--to", "h2").stdout)
        moved = time.perf_counter() - t0
        assert info["host"] == "h2" and info["state"] == "running", info
        assert _sha256(h2, name) == digest, "the moved volume's data differs"
        raw.append(send_receive(f"{raw_src}@raw", raw_dst))
    finally:
        for h in (h1, h2):
            h.rex("destroy", "--volumes", name, check=False)
        _destroy(raw_dst)
        _destroy(raw_src)
    mean = statistics.mean(raw)
    raws = " / ".join(f"{x:.2f}" for x in raw)
    return [size_text(size), f"{moved:.2f}", raws, f"{moved / mean:.2f}x"]


def test_move_against_send_receive(bed: list[ClusterHost], tmp_path: Path) -> None:  # noqa: F811
    h1, h2, _ = bed
    src = tmp_path / "data.rex"
    src.write_text(REX)
    rows = [measure(h1, h2, parse_size(s), src) for s in os.environ[SIZES_ENV].split(",")]
    header = ["volume data", "rex move h1 -> h2, s", "raw zfs send-receive, s (before / after)",
              "rex move / raw mean"]  # fmt: skip
    Path(os.environ[OUT_ENV]).write_text("\n".join(table(header, rows)) + "\n")


# -- the script --------------------------------------------------------------------------


def pool_size(sizes: list[int]) -> int:
    """The test pool for these sizes: the bed's 3 GiB, plus four copies of the
    largest (the volume, its move, the raw source and the raw copy)."""
    return (3 << 30) + 4 * max(sizes)


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100M,1G", help="volume data sizes (100M,1G)")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    if os.geteuid() != 0:
        raise SystemExit("run as root (zfs, network namespaces)")
    need = pool_size(sizes)
    tmp = Path(tempfile.gettempdir())
    free = shutil.disk_usage(tmp).free
    # the pool file is sparse: it takes room as the data is written
    if free < need + (1 << 30):
        raise SystemExit(f"{tmp} has {free >> 20} MiB free; the pool file may grow to "
                         f"{need >> 20} MiB: use smaller --sizes")  # fmt: skip
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with tempfile.NamedTemporaryFile("r", suffix=".md") as out:
        env = {**os.environ, SIZES_ENV: ",".join(size_text(s) for s in sizes),
               OUT_ENV: out.name, "REX_TEST_POOL_SIZE": str(need)}  # fmt: skip
        argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                str(Path(__file__).resolve())]  # fmt: skip
        # pytest's report to stderr: stdout is the table alone
        status = subprocess.run(argv, env=env, stdout=sys.stderr, check=False,
                                cwd=Path(__file__).resolve().parents[1]).returncode  # fmt: skip
        result = out.read()
    print(f"# bench/bench_move.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# started {started}; {os.cpu_count()} CPUs; Linux "
          f"{platform.release()}; load average at start {load0}; pool file "
          f"{need >> 20} MiB (sparse) in {tmp}, {free >> 20} MiB free there")  # fmt: skip
    print(result.rstrip() if result else "# no figures: the run failed (pytest's report above)")
    return status


if __name__ == "__main__":
    sys.exit(main())
