"""LIMIT and SECRET in the runtimes, through a scripted runner: the exact command
lines and their order on FreeBSD (rctl(8), the secrets tmpfs, jail(8)), what a
Linux `rex exec` is made to join, and the pure parsers behind them. The
kernel's side (cgroups, tmpfs, the FIFO handshake) is in
tests/integration/test_limits_secrets.py."""

from __future__ import annotations

import ipaddress
import json
import os
import resource
import stat
from pathlib import Path

import pytest

from rexcarcer.base.source import Bases
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import RuntimeBackendError
from rexcarcer.fsutil import read_small
from rexcarcer.limits import LimitError, Limits
from rexcarcer.limits.cgroup import CgroupDriver
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.platform.freebsd import FreeBSDPlatform
from rexcarcer.rexfile.parser import parse
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime import linux, procfs, secretfs
from rexcarcer.runtime.base import JailSpec, Secret
from rexcarcer.runtime.freebsd import FreeBSDRuntime
from rexcarcer.runtime.freebsd_extras import conf_root
from rexcarcer.secret.files import LocalSecrets
from rexcarcer.secret.source import Secrets
from tests.unit.fakes import fake_host

DATA = Path(__file__).resolve().parents[1] / "data" / "limits"
SYSCTL = ("sysctl", "-n", "kern.racct.enable")
SECRETS = (Secret("db", b"pw-one"), Secret("tls.key", b"-----BEGIN"))


def _spec(root: Path, **kw: object) -> JailSpec:
    return JailSpec("web", root, "web.jail.rex.internal", None, "rex0", **kw)  # type: ignore[arg-type]


def _freebsd(tmp_path: Path, racct: str = "1\n") -> tuple[FreeBSDRuntime, ScriptedRunner]:
    r = ScriptedRunner(strict=True)
    r.on(list(SYSCTL), racct)
    for prefix in (["jail"], ["mount"], ["umount"], ["rctl"]):
        r.on(prefix, "")
    rt = FreeBSDRuntime(r, conf_dir=tmp_path / "jail.conf.d", is_mount=lambda p: True)
    return rt, r


# -- FreeBSD: rctl rules and the secrets tmpfs around jail -c / jail -r -------------------


def test_freebsd_start_limits_and_secrets_in_order(tmp_path: Path) -> None:
    root = tmp_path / "jails" / "web"
    root.mkdir(parents=True)
    rt, r = _freebsd(tmp_path)
    spec = _spec(root, limits=Limits(memory=512 << 20, cpu=1.5), secrets=SECRETS)
    rt.start(spec)
    conf = str(tmp_path / "jail.conf.d" / "web.conf")
    secrets_dir = str(root / "run" / "secrets")
    assert r.calls == [
        SYSCTL,  # racct first: a LIMIT this host cannot enforce changes nothing
        ("mount", "-t", "tmpfs", "-o", "rw,nosuid,noexec,mode=755,size=8m", "tmpfs", secrets_dir),
        ("rctl", "-a", "jail:web:memoryuse:deny=536870912"),
        ("rctl", "-a", "jail:web:pcpu:deny=150"),
        ("jail", "-f", conf, "-c", "web"),
    ]
    assert [list(c) for c in r.calls[1:]] == rt.start_commands(spec)  # rex plan shows these
    # is_mount says yes here: the files land in the directory rex mounted on
    for s in SECRETS:
        path = root / "run" / "secrets" / s.name
        assert path.read_bytes() == s.data
        assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE((root / "run" / "secrets").stat().st_mode) == 0o755


def test_freebsd_limit_refused_while_racct_is_off(tmp_path: Path) -> None:
    root = tmp_path / "jails" / "web"
    root.mkdir(parents=True)
    rt, r = _freebsd(tmp_path, racct="0\n")
    with pytest.raises(LimitError, match=r"kern\.racct\.enable=0") as err:
        rt.start(_spec(root, limits=Limits(pids=10), secrets=SECRETS))
    assert "/boot/loader.conf" in (err.value.hint or "") and "reboot" in (err.value.hint or "")
    assert not any(c[:2] in (("mount", "-t"), ("rctl", "-a")) or c[0] == "jail" for c in r.calls)
    assert not (root / "run" / "secrets" / "db").exists()
    platform = FreeBSDPlatform(r, fake_host(tmp_path / "h").config, runtime=rt)
    with pytest.raises(LimitError, match="accounting is off"):
        platform.check_limits(Limits(pids=10))
    platform.check_limits(Limits())  # nothing asked, nothing checked


def test_freebsd_stop_unmounts_from_the_mount_table_and_drops_rules(tmp_path: Path) -> None:
    root = tmp_path / "jails" / "web"
    root.mkdir(parents=True)
    rt, r = _freebsd(tmp_path)
    rt.start(_spec(root, secrets=SECRETS))
    r.on(["jls"], json.dumps({"jail-information": {"jail": [
        {"jid": "3", "name": "web", "path": str(root)}]}}))  # fmt: skip
    # the jail renamed /run meanwhile: the table, not the path, says where the tmpfs is
    table = (f"zroot/rex/jails/web\t{root}\tzfs\trw\t0 0\n"
             f"tmpfs\t{root}/var/moved/secrets\ttmpfs\trw,nosuid\t0 0\n"
             f"tmpfs\t{root}-other/run/secrets\ttmpfs\trw\t0 0\n")  # fmt: skip
    r.on(["mount", "-p"], table)
    r.calls.clear()
    rt.stop("web")
    conf = str(tmp_path / "jail.conf.d" / "web.conf")
    assert r.calls == [
        ("jls", "--libxo=json", "jid", "name", "path"),
        ("jail", "-f", conf, "-r", "web"),
        ("mount", "-p"),
        ("umount", "-f", f"{root}/var/moved/secrets"),
        ("rctl", "-r", "jail:web"),
    ]


def test_freebsd_failed_create_undoes_mount_and_rules(tmp_path: Path) -> None:
    root = tmp_path / "jails" / "web"
    root.mkdir(parents=True)
    rt, r = _freebsd(tmp_path)
    r.on(["jail", "-f"], "jail: web: mount.devfs: failed\n", returncode=1)
    r.on(["mount", "-p"], f"tmpfs\t{root}/run/secrets\ttmpfs\trw\t0 0\n")
    with pytest.raises(RuntimeBackendError, match="did not start"):
        rt.start(_spec(root, limits=Limits(pids=5), secrets=SECRETS))
    assert r.calls[-3:] == [("mount", "-p"), ("umount", "-f", f"{root}/run/secrets"),
                            ("rctl", "-r", "jail:web")]  # fmt: skip


def test_freebsd_usage_from_rctl_or_nothing(tmp_path: Path) -> None:
    rt, r = _freebsd(tmp_path)
    r.on(["rctl", "-u"], (DATA / "rctl-u-jail.txt").read_text())
    use = rt.usage("web")
    assert use["memory"] > 0 and "pids" in use
    rt, r = _freebsd(tmp_path)
    r.on(["rctl", "-u"], "rctl: RACCT/RCTL present, but disabled\n", returncode=1)
    assert rt.usage("web") == {}


def test_conf_root_reads_the_path_rex_wrote() -> None:
    assert conf_root('"web" {\n\tpath = "/tank/rex/jails/web";\n}\n') == Path("/tank/rex/jails/web")
    assert conf_root(None) is None and conf_root("web { }") is None


def _freebsd_engine(tmp_path: Path) -> tuple[Engine, ScriptedRunner]:
    host = fake_host(tmp_path)
    runner = ScriptedRunner()
    runner.on(list(SYSCTL), "1\n")
    runtime = FreeBSDRuntime(runner, conf_dir=tmp_path / "jail.conf.d", is_mount=lambda p: True)
    host.platform = FreeBSDPlatform(runner, host.config, runtime=runtime)
    host.runner = runner
    return Engine(host, Bases(), policy=NetworkPolicy(), secrets=Secrets()), runner


def test_freebsd_plan_of_limits_and_secrets_is_what_up_runs(tmp_path: Path) -> None:
    eng, runner = _freebsd_engine(tmp_path)
    LocalSecrets(eng.host.config.root).set("db", b"pw-one")
    rexfile = parse("BASE bb\nLIMIT memory 64M\nLIMIT openfiles 256\nSECRET db\n",
                    path=tmp_path / "web.rex")  # fmt: skip
    plan = plan_up(eng, rexfile, "web")
    start = next(a for a in plan if a.kind == "start")
    root = eng.host.storage.mountpoint("jails") / "web"
    runner.on(["jls"], json.dumps({"jail-information": {"jail": [
        {"jid": "1", "name": "web", "path": str(root)}]}}))  # fmt: skip
    runner.calls.clear()
    jails.up(eng, rexfile, "web")
    changes = [list(c) for c in runner.calls
               if c[0] in ("mount", "jail") or c[:2] == ("rctl", "-a")]  # fmt: skip
    assert [list(c) for c in start.commands] == changes
    assert changes[0][:3] == ["mount", "-t", "tmpfs"]
    assert "pw-one" not in json.dumps([a.as_json() for a in plan])


# -- Linux: what rex exec joins, the start command line ----------------------------------


def test_linux_exec_joins_the_jails_cgroups_and_rlimits(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    for name in ("cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "unified"):
        (cg / name).mkdir(parents=True)
    (cg / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    mountinfo = (DATA / "mountinfo-hybrid.txt").read_text().replace("/sys/fs/cgroup", str(cg))
    driver = CgroupDriver(cg, mountinfo=mountinfo, prefix="rexcarcer/rex-t", read=read_small)
    for d in driver.group_dirs("web"):  # what the kernel would have made at start
        d.mkdir(parents=True)
    r = ScriptedRunner()
    rt = linux.LinuxRuntime(r, run_dir=tmp_path / "run", bridge="rex0", token="t",
                            host_address=ipaddress.ip_interface("203.0.113.1/24"),
                            cgroups=lambda: driver)  # fmt: skip
    me = os.getpid()
    st = procfs.stat(me)
    assert st is not None
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "web.json").write_text(json.dumps(
        {"init_pid": me, "init_start": st.starttime, "limits": {"openfiles": 64}}))  # fmt: skip
    rt.exec("web", ["true"], env={})
    assert r.calls[-1] == tuple(linux.exec_argv(me, ["true"]))
    assert set(r.call_cgroups[-1]) == {str(d / "cgroup.procs") for d in driver.group_dirs("web")}
    assert all("/rexcarcer/rex-t/web/" in p for p in r.call_cgroups[-1])
    assert r.call_rlimits[-1] == {resource.RLIMIT_NOFILE: (64, 64)}


def test_linux_start_argv_names_the_secrets_directory_as_an_argument() -> None:
    argv = linux.start_argv("rex-t-web", Path("/pool/jails/web"), "web.x", (), "/run/secrets",
                            status_file=Path("/state/run/web.exit"))  # fmt: skip
    assert argv[-3] == "/run/secrets" and argv[-4] == linux.INIT  # before jailenter's argv
    assert 'mount -t tmpfs -o mode=0755,size=8m,nosuid,nodev,noexec tmpfs "$root$secrets"' in (
        linux.SETUP
    )
    assert "/pool/jails" not in linux.SETUP
    # the jail's init waits for rex's word before anything of the jail runs
    assert linux.INIT.index(".rex-go") < linux.INIT.index("/etc/rc")


def test_a_cgroup_prefix_part_must_be_a_label() -> None:
    with pytest.raises(LimitError, match="bad cgroup prefix"):
        CgroupDriver(Path("/nonexistent"), mountinfo="", prefix="rexcarcer/123456")
    CgroupDriver(Path("/nonexistent"), mountinfo="", prefix="rexcarcer/rex-123456")


# -- secretfs: sizes and the kernel tables it reads ---------------------------------------


def test_mount_type_reads_the_last_mount_at_a_point() -> None:
    info = (
        "36 35 0:33 / / rw,relatime - zfs pool/jails/web rw\n"
        "40 36 0:40 / /run/secrets rw,nosuid - ext4 /dev/x rw\n"
        "41 40 0:41 / /run/secrets rw,nosuid,nodev,noexec - tmpfs tmpfs rw,size=8192k\n"
        "42 36 0:42 / /odd\\040dir rw - tmpfs tmpfs rw\n"
    )
    assert secretfs.mount_type(info, "/run/secrets") == "tmpfs"
    assert secretfs.mount_type(info, "/odd dir") == "tmpfs"
    assert secretfs.mount_type(info, "/run") is None
    assert secretfs.mount_type(info.splitlines()[1], "/run/secrets") == "ext4"


def test_tmpfs_below_a_root_deepest_first() -> None:
    table = ("tmpfs\t/j/web/a\ttmpfs\trw\t0 0\ntmpfs\t/j/web/a/b\ttmpfs\trw\t0 0\n"
             "tmpfs\t/j/web2/x\ttmpfs\trw\t0 0\n/dev/ada0p2\t/j/web/c\tufs\trw\t1 1\n")  # fmt: skip
    assert secretfs.tmpfs_below(table, Path("/j/web")) == ["/j/web/a/b", "/j/web/a"]


def test_sizes_are_checked_before_anything_starts() -> None:
    secretfs.check_sizes([Secret("a", b"x" * secretfs.MAX_SECRET)])
    with pytest.raises(RuntimeBackendError, match="secret big is") as err:
        secretfs.check_sizes([Secret("big", b"y" * (secretfs.MAX_SECRET + 1))])
    assert "yyy" not in err.value.message
    many = [Secret(f"s{i}", b"z" * secretfs.MAX_SECRET) for i in range(130)]
    with pytest.raises(RuntimeBackendError, match="holds"):
        secretfs.check_sizes(many)


def test_a_symlinked_run_is_resolved_inside_the_jail(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var" / "run").mkdir(parents=True)
    (root / "run").symlink_to("/var/run")  # absolute: the jail's /var/run, never the host's
    assert secretfs.mountpoint(root) == "/var/run/secrets"
    assert (root / "var" / "run" / "secrets").is_dir()
