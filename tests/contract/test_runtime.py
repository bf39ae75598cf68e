"""The runtime contract, one test body for the in-memory fake and the real
Linux runtime (namespaces, pivot_root into a ZFS dataset holding busybox).

The real one runs every command inside a network namespace made for the test,
so its bridge and veths never touch the machine's network."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rexcarcer.errors import RuntimeBackendError
from rexcarcer.run import NO_RLIMITS, Arg, Completed, RLimits, SubprocessRunner
from rexcarcer.runtime.base import JailSpec, JailState, Runtime, jail_env
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.runtime.linux import LinuxRuntime
from tests.integration.conftest import sh

SUBNET = "203.0.113.0/24"


@dataclass
class NetnsRunner(SubprocessRunner):
    """Every command inside one network namespace."""

    netns: str = ""

    def _in(self, argv: Sequence[Arg]) -> list[Arg]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]

    def run(self, argv: Sequence[Arg], **kw: Any) -> Completed:  # type: ignore[override]
        return super().run(self._in(argv), **kw)

    def spawn(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None = None,
              log_path: str | None = None, cgroups: Sequence[Arg] = (),
              rlimits: RLimits = NO_RLIMITS) -> int:  # fmt: skip
        return super().spawn(
            self._in(argv), env=env, log_path=log_path, cgroups=cgroups, rlimits=rlimits
        )


@dataclass
class Case:
    runtime: Runtime
    spec: JailSpec


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("linux", marks=pytest.mark.integration),
    ]
)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    tok = uuid.uuid4().hex[:6]
    address = ipaddress.ip_interface("203.0.113.5/24")
    if request.param == "fake":
        root = tmp_path / "root"
        root.mkdir()
        fake = FakeRuntime(handler=lambda cmd: int(cmd.split()[-1]) if "exit " in cmd else 0)
        yield Case(fake, JailSpec("c1", root, "c1.test", address, "rexb0",
                                  env=(("GREETING", "hi"),)))  # fmt: skip
        return
    yield from _linux(request, tmp_path, tok, address)


def _linux(
    request: pytest.FixtureRequest, tmp_path: Path, tok: str, address: Any
) -> Iterator[Case]:
    from tests.conftest import revive_zfs

    pool = request.getfixturevalue("pool")
    busybox = request.getfixturevalue("busybox_root")
    revive_zfs(pool)
    netns, dataset = f"rexc-{tok}", f"{pool}/rt{tok}"
    sh("ip", "netns", "add", netns)
    sh("zfs", "create", dataset)
    root = Path(sh("zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip())
    sh("cp", "-a", f"{busybox}/.", f"{root}/")
    host_address = ipaddress.ip_interface("203.0.113.1/24")
    runtime = LinuxRuntime(NetnsRunner(netns=netns), run_dir=tmp_path / "run", bridge=f"rb{tok}",
                           host_address=host_address, token=tok)  # fmt: skip
    try:
        yield Case(runtime, JailSpec("c1", root, "c1.test", address, f"rb{tok}",
                                     env=(("GREETING", "hi"),)))  # fmt: skip
    finally:
        runtime.remove("c1")
        sh("ip", "netns", "del", netns, check=False)
        sh("zfs", "destroy", "-r", dataset, check=False)


def test_start_exec_stop(case: Case) -> None:
    rt, spec = case.runtime, case.spec
    assert rt.status(["c1", "other"])["other"].state is JailState.STOPPED
    assert rt.start_commands(spec)  # what `rex plan` shows
    rt.start(spec)
    rt.start(spec)  # already running: a no-op
    assert rt.status(["c1"])["c1"].state is JailState.RUNNING
    # `rex ls`: state and usage in one call, the same keys as usage() has
    both = rt.status(["c1", "other"], usage=True)
    assert both["c1"].state is JailState.RUNNING and both["c1"].usage is not None
    assert set(both["c1"].usage) == set(rt.usage("c1"))
    assert both["other"].state is JailState.STOPPED and both["other"].usage is None
    env = jail_env(spec.env)
    assert rt.exec("c1", ["sh", "-c", 'test "$GREETING" = hi && exit 7'], env=env).returncode == 7
    assert rt.exec("c1", ["true"], env=env).ok
    rt.stop("c1")
    rt.stop("c1")  # idempotent
    assert rt.status(["c1"])["c1"].state is JailState.STOPPED
    with pytest.raises(RuntimeBackendError, match="not running"):
        rt.exec("c1", ["true"], env=env)
    rt.remove("c1")
    rt.remove("c1")  # idempotent


def test_a_build_step_returns_its_status(case: Case) -> None:
    rt, spec = case.runtime, case.spec
    env = jail_env(spec.env)
    assert rt.build_run(spec.root, "exit 0", env=env).returncode == 0
    assert rt.build_run(spec.root, "exit 3", env=env).returncode == 3
    assert rt.build_commands(spec.root, "exit 3", env)  # what `rex plan` shows
