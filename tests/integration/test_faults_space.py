"""A full pool (here: a quota on the test's parent dataset, which zfs treats
like a full pool for everything below it): a build step or a volume that runs
out of space fails with an error naming the dataset and how to free space;
the previous generation keeps running; nothing half-written is kept."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import Rex, sh

OUT_OF_SPACE = 81
A = "BASE busybox\nPROVISION RUN echo a > /marker\n"
# random bytes: the pool compresses, and zeros would take no room at all
FILL = "BASE busybox\nPROVISION RUN dd if=/dev/urandom of=/fill bs=1M count=64\n"


def _used(rex: Rex) -> int:
    return int(sh("zfs", "get", "-Hp", "-o", "value", "used", rex.dataset).stdout)


def _images(rex: Rex) -> list[list[str]]:
    done = sh("zfs", "list", "-H", "-o", "name,rexcarcer:complete", "-r", f"{rex.dataset}/images")
    return [r.split("\t") for r in done.stdout.splitlines()[1:]]


def test_a_build_step_that_fills_the_pool(rex: Rex, tmp_path: Path) -> None:
    rexfile = tmp_path / "keep.rex"
    rexfile.write_text(A)
    rex.run("up", rexfile)
    sh("zfs", "set", f"quota={_used(rex) + (24 << 20)}", rex.dataset)
    try:
        rexfile.write_text(FILL)
        done = rex.run("up", rexfile, check=False)
        assert done.returncode == OUT_OF_SPACE, done.stderr
        assert f"ran out of space in dataset {rex.dataset}/images/" in done.stderr, done.stderr
        assert f"zfs list -o space -r {rex.dataset}" in done.stderr, done.stderr
        # the previous generation keeps running; no new generation was made
        assert rex.jails()["keep"]["state"] == "running"
        assert rex.run("exec", "keep", "--", "cat", "/marker").stdout == "a\n"
        history = rex.json("history", "keep")
        assert isinstance(history, list) and len(history) == 1, history
        # nothing half-written: every image left is complete
        assert all(c == "1" for _, c in _images(rex)), _images(rex)
    finally:
        sh("zfs", "set", "quota=none", rex.dataset)
    # once there is room, the same file goes through
    rexfile.write_text(FILL.replace("count=64", "count=2"))
    rex.run("up", rexfile)
    assert rex.run("exec", "keep", "--", "ls", "/fill").returncode == 0


def test_a_volume_on_a_full_pool(rex: Rex, tmp_path: Path) -> None:
    rexfile = tmp_path / "vol.rex"
    rexfile.write_text("BASE busybox\nVOLUME data /data 8M\n")
    rex.run("up", rexfile)  # the base is received, the layout made
    rex.run("destroy", "vol", "--volumes")
    filler = f"{rex.dataset}/filler"
    sh("zfs", "create", filler)
    sh("zfs", "set", f"quota={_used(rex) + (16 << 20)}", rex.dataset)
    try:
        mnt = sh("zfs", "get", "-H", "-o", "value", "mountpoint", filler).stdout.strip()
        sh("dd", "if=/dev/urandom", f"of={mnt}/fill", "bs=1M", "count=32", check=False)
        sh("sync")
        done = rex.run("up", rexfile, check=False)
        assert done.returncode == OUT_OF_SPACE, done.stderr
        assert f"out of space for dataset {rex.dataset}/" in done.stderr, done.stderr
        assert f"zfs list -o space -r {rex.dataset}" in done.stderr, done.stderr
        assert rex.jails() == {}
        assert rex.leftovers() == {"netns": [], "datasets": [], "mounts": [], "processes": []}
        vols = sh("zfs", "list", "-H", "-o", "name", "-r", f"{rex.dataset}/volumes")
        assert vols.stdout.split()[1:] == [], vols.stdout
    finally:
        sh("zfs", "destroy", "-r", filler, check=False)
        sh("zfs", "set", "quota=none", rex.dataset)
    rex.run("up", rexfile)
    assert rex.jails()["vol"]["state"] == "running"
