"""The distribution: ``python -m build`` makes a wheel and an sdist; the wheel,
installed into a fresh venv (and with pipx), gives a working ``rex`` whose
manual pages ``man`` finds from PATH alone.

Needs the package index (build isolation and the wheel's dependencies), like
``scripts/setup``; no root, no ZFS."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capability import linux_only, require_tools
from tests.integration.conftest import REPO, sh

MAN_PAGES = ["man5/rex.rex.5", "man5/rexcarcer.toml.5", "man8/rex-agent.8", "man8/rex.8"]


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only(
        "a fresh venv takes the dependencies from PyPI (cryptography has no FreeBSD wheel;"
        " the port uses py-cryptography), and man-db finds the pages from PATH"
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "build", "--outdir", out, REPO, timeout=600)
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("rexcarcer-*-py3-none-any.whl")
    return wheel


def _env(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REX_", "MANPATH"))}
    return {**env, "PATH": path}


def test_build_makes_a_wheel_and_an_sdist(dist: Path) -> None:
    names = zipfile.ZipFile(_wheel(dist)).namelist()
    version = re.search(r"rexcarcer-([^-]+)-", _wheel(dist).name)
    assert version is not None
    for page in MAN_PAGES:  # as data files (share/man) and inside the package
        assert f"rexcarcer-{version.group(1)}.data/data/share/man/{page}" in names
        assert f"rexcarcer/man/{page.split('/')[1]}" in names
    assert not [n for n in names if n.endswith(".in")]
    (sdist,) = dist.glob("rexcarcer-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    for path in ("src/rexcarcer/man/rex.8.in", "contrib/systemd/rexcarcer-agent.service",
                 "contrib/freebsd/sysutils/rexcarcer/Makefile"):  # fmt: skip
        assert f"{sdist.name.removesuffix('.tar.gz')}/{path}" in members


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("venv") / "v"
    sh(sys.executable, "-m", "venv", where)
    sh(where / "bin" / "pip", "install", "-q", _wheel(dist), timeout=600)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def test_the_installed_rex_runs(venv: Path) -> None:
    env = _env(f"{venv / 'bin'}:/usr/bin:/bin")
    assert re.fullmatch(r"rex, version \S+\n", sh("rex", "--version", env=env).stdout)
    assert "\n  completion  " in sh("rex", "--help", env=env).stdout
    done = sh("rex", "check", REPO / "examples" / "hello" / "hello.rex", env=env, cwd=venv)
    assert done.stdout.endswith("hello.rex: ok\n")


def test_man_finds_the_pages_from_path(venv: Path) -> None:
    if shutil.which("man") is None:
        pytest.fail("man(1) missing (Debian package man-db; scripts/setup installs it)")
    env = _env(f"{venv / 'bin'}:/usr/bin:/bin")
    for page in MAN_PAGES:
        name, section = page.split("/")[1].rsplit(".", 1)
        found = sh("man", "-w", section, name, env=env).stdout.strip()
        assert found == str(venv / "share" / "man" / page)
    # without the venv on PATH the pages are not found: the test is not blind
    gone = sh("man", "-w", "rex-agent", env=_env("/usr/bin:/bin"), check=False)
    assert gone.returncode != 0


def test_pipx_installs_a_working_rex(dist: Path, tmp_path: Path) -> None:
    require_tools("pipx")  # Debian package pipx; scripts/setup installs it
    pipx = shutil.which("pipx")
    assert pipx is not None
    env = {
        **_env(f"{tmp_path / 'bin'}:/usr/bin:/bin"),
        "PIPX_HOME": str(tmp_path / "home"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "share" / "man"),
    }
    sh(pipx, "install", _wheel(dist), env=env, timeout=600)
    assert sh("rex", "--version", env=env).stdout.startswith("rex, version ")
    version = sh(pipx, "--version", env=env).stdout.strip()
    if tuple(int(x) for x in version.split(".")[:2]) >= (1, 5):  # pipx 1.5 links man pages
        assert sh("man", "-w", "rex", env=env).stdout.strip().endswith("/man8/rex.8")
