"""FreeBSD runtime: golden jail.conf files and argv lists, jls output parsed.

Nothing here runs jail(8): a scripted runner records the commands and replays
jls output saved in tests/data/freebsd (libxo JSON as jls.c emits it).
"""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest

from rexcarcer.errors import Conflict, RuntimeBackendError, UnsafePath, UsageError
from rexcarcer.run import Completed, ScriptedRunner
from rexcarcer.runtime import freebsd
from rexcarcer.runtime.base import BuildNet, JailSpec, JailState, JailStatus
from rexcarcer.runtime.freebsd import FreeBSDRuntime

DATA = Path(__file__).parent.parent / "data" / "freebsd"
JLS = ("jls", "--libxo=json", "jid", "name", "path")
RCTL_R = ("rctl", "-r", "jail:web")
MOUNT_P = ("mount", "-p")

WEB = JailSpec(
    name="web",
    root=Path("/tank/rex/jails/web"),
    hostname="web.jail.rex.internal",
    address=ipaddress.ip_interface("10.66.0.10/24"),
    interface="rex0",
    gateway=ipaddress.IPv4Address("10.66.0.1"),
    osrelease="14.1-RELEASE-p5",
)
SVC = JailSpec(
    name="svc",
    root=Path("/tank/rex/jails/svc"),
    hostname="svc.jail.rex.internal",
    address=ipaddress.ip_interface("fd00:66::10/64"),
    interface="rex0",
)


def _data(name: str) -> str:
    return (DATA / name).read_text()


def _runtime(tmp_path: Path, runner: ScriptedRunner, mounted: bool = False) -> FreeBSDRuntime:
    return FreeBSDRuntime(runner, conf_dir=tmp_path / "jail.conf.d", is_mount=lambda p: mounted)


def _running(runner: ScriptedRunner, fixture: str = "jls-running.json") -> ScriptedRunner:
    runner.on(JLS, _data(fixture))
    return runner


# -- jail.conf ----------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "golden"), [(WEB, "web.conf"), (SVC, "svc.conf")])
def test_render_matches_golden_file(spec: JailSpec, golden: str) -> None:
    assert freebsd.render_jail_conf(spec) == _data(golden)


def test_golden_files_carry_a_valid_digest_and_an_edit_breaks_it() -> None:
    text = _data("web.conf")
    assert freebsd.conf_is_ours(text)
    assert not freebsd.conf_is_ours(text.replace('securelevel = "2"', 'securelevel = "0"'))
    assert not freebsd.conf_is_ours(text.split("\n", 1)[1])  # header removed
    assert not freebsd.conf_is_ours("")


def test_no_address_disables_both_families() -> None:
    spec = JailSpec("solo", Path("/tank/rex/jails/solo"), "solo", None, "rex0")
    text = freebsd.render_jail_conf(spec)
    assert '\tip4 = "disable";\n\tip6 = "disable";\n' in text
    assert "addr" not in text and "osrelease" not in text


def test_every_static_allow_is_written_and_only_reserved_ports_and_suser_are_on() -> None:
    # sys/kern/kern_jail.c pr_flag_allow[] (14.x): the kernel's static allow.*
    # parameters; JAIL_DEFAULT_ALLOW turns set_hostname, reserved_ports,
    # unprivileged_proc_debug and suser on unless the file says otherwise
    static = ["set_hostname", "sysvipc", "raw_sockets", "chflags", "mount", "quotas",
              "socket_af", "mlock", "reserved_ports", "read_msgbuf",
              "unprivileged_proc_debug", "suser"]  # fmt: skip
    lines = [ln.strip().rstrip(";") for ln in _data("web.conf").splitlines()]
    allow = [ln for ln in lines if ln.startswith("allow.")]
    assert sorted(a.removeprefix("allow.").removeprefix("no") for a in allow) == sorted(static)
    on = [a for a in allow if not a.startswith("allow.no")]
    assert on == ["allow.reserved_ports", "allow.suser"]


def test_aliases_are_host_routes_on_the_interface() -> None:
    # ifconfig(8) alias: "Usually 0xffffffff is most appropriate"; rc.d/jail
    # l.340-346 defaults to /32 and /128; the subnet's prefix is the host's
    assert 'ip4.addr = "rex0|10.66.0.10/32";' in _data("web.conf")
    assert 'ip6.addr = "rex0|fd00:66::10/128";' in _data("svc.conf")
    public = JailSpec("docs", Path("/tank/rex/jails/docs"), "docs.example.com",
                      ipaddress.ip_interface("203.0.113.8/24"), "vtnet0")  # fmt: skip
    assert 'ip4.addr = "vtnet0|203.0.113.8/32";' in freebsd.render_jail_conf(public)


def test_exec_start_sources_the_jail_env_for_every_daemon() -> None:
    # exec.clean drops rex's environment (command.c l.696-718); /etc/rc passes
    # its own to every rc.d script, so the ENV file is sourced around it
    text = _data("web.conf")
    assert ('exec.start = "/bin/sh -c \'set -a; . /etc/rexcarcer/env; set +a; '
            'exec /bin/sh /etc/rc\'";') in text  # fmt: skip
    assert "exec /bin/sh /etc/rc.shutdown jail'\";" in text


def test_values_are_quoted_and_escaped_for_jail_conf() -> None:
    assert freebsd.conf_quote("web") == '"web"'
    assert freebsd.conf_quote('a "b" \\ $name') == '"a \\"b\\" \\\\ \\$name"'
    assert freebsd.conf_quote("x\ny\tz\x01") == '"x\\ny\\tz\\001"'
    with pytest.raises(UsageError):
        freebsd.conf_quote("nul\0")


def test_root_with_shell_characters_is_refused() -> None:
    spec = JailSpec("web", Path("/tank/rex/jails/we b;x"), "web", None, "rex0")
    with pytest.raises(UnsafePath):
        freebsd.render_jail_conf(spec)
    with pytest.raises(UnsafePath):
        freebsd.render_build_conf(Path("relative/root"), "rexbuild-x", None)


def test_dotted_name_is_refused() -> None:
    with pytest.raises(UsageError):
        freebsd.render_jail_conf(JailSpec("a.b", Path("/r"), "a", None, "rex0"))


# -- start --------------------------------------------------------------------------


def test_start_writes_the_file_then_creates_the_jail(tmp_path: Path) -> None:
    r = ScriptedRunner(strict=True)
    r.on(["jail"], "web: created\n")
    rt = _runtime(tmp_path, r)
    rt.start(WEB)
    conf = tmp_path / "jail.conf.d" / "web.conf"
    assert r.calls == [("jail", "-f", str(conf), "-c", "web")]
    assert conf.read_text() == _data("web.conf")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644
    assert [p.name for p in conf.parent.iterdir()] == ["web.conf"]  # no temp file left


def test_hand_edited_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    r = ScriptedRunner(strict=True)
    rt = _runtime(tmp_path, r)
    conf = rt.conf_path("web")
    conf.parent.mkdir()
    edited = _data("web.conf").replace('securelevel = "2"', 'securelevel = "3"')
    conf.write_text(edited)
    with pytest.raises(Conflict) as err:
        rt.start(WEB)
    assert str(conf) in err.value.message and err.value.hint
    assert conf.read_text() == edited
    assert r.calls == []


def test_file_without_header_is_refused(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ScriptedRunner(strict=True))
    conf = rt.conf_path("web")
    conf.parent.mkdir()
    conf.write_text('web { path = "/usr/jails/web"; persist; }\n')
    with pytest.raises(Conflict):
        rt.write_conf(WEB)
    assert conf.read_text() == 'web { path = "/usr/jails/web"; persist; }\n'


def test_file_with_our_header_is_rewritten(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ScriptedRunner())
    conf = rt.conf_path("web")
    conf.parent.mkdir()
    older = JailSpec("web", Path("/tank/rex/jails/web"), "old.example", None, "rex0")
    conf.write_text(freebsd.render_jail_conf(older))
    conf.chmod(0o600)
    rt.write_conf(WEB)
    assert conf.read_text() == _data("web.conf")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644


def test_start_failure_is_a_runtime_error(tmp_path: Path) -> None:
    r = ScriptedRunner()
    r.on(["jail"], 'jail: "web" already exists\n', returncode=1)
    with pytest.raises(RuntimeBackendError, match="already exists"):
        _runtime(tmp_path, r).start(WEB)


# -- stop, status, remove -----------------------------------------------------------


def test_stop_removes_a_running_jail_with_its_file(tmp_path: Path) -> None:
    r = _running(ScriptedRunner(strict=True))
    r.on(["jail"], "web: removed\n")
    r.on(["rctl", "-r"], "No such process", returncode=1)  # no rule: nothing to remove
    rt = _runtime(tmp_path, r)
    rt.stop("web")
    # no jail.conf (so no root to look for a secrets tmpfs under); its rctl rules go
    assert r.calls == [JLS, ("jail", "-f", str(tmp_path / "jail.conf.d/web.conf"), "-r", "web"),
                       RCTL_R]  # fmt: skip


def test_stop_of_a_jail_that_is_not_running_runs_no_jail_r(tmp_path: Path) -> None:
    r = _running(ScriptedRunner(strict=True))
    r.on(["rctl", "-r"], "")
    _runtime(tmp_path, r).stop("svc")
    assert r.calls == [JLS, ("rctl", "-r", "jail:svc")]


def test_stop_tolerates_a_jail_that_exited_meanwhile(tmp_path: Path) -> None:
    r = _running(ScriptedRunner())
    r.on(["jail"], 'jail: "web" not found\n', returncode=1)
    _runtime(tmp_path, r).stop("web")


def test_stop_failure_is_reported(tmp_path: Path) -> None:
    r = _running(ScriptedRunner())
    r.on(["jail"], "jail: web: /bin/sh /etc/rc.shutdown jail: timed out\n", returncode=1)
    with pytest.raises(RuntimeBackendError, match="timed out"):
        _runtime(tmp_path, r).stop("web")


def test_status_is_one_jls_call_for_every_name(tmp_path: Path) -> None:
    r = _running(ScriptedRunner(strict=True))
    got = _runtime(tmp_path, r).status(["web", "svc", "inner"])
    assert r.calls == [JLS]
    assert got == {
        "web": JailStatus("web", JailState.RUNNING, 1),
        "svc": JailStatus("svc", JailState.STOPPED),
        "inner": JailStatus("inner", JailState.STOPPED),
    }


def test_status_of_no_names_runs_nothing(tmp_path: Path) -> None:
    r = ScriptedRunner(strict=True)
    assert _runtime(tmp_path, r).status([]) == {}
    assert r.calls == []


def test_remove_stops_and_deletes_our_file(tmp_path: Path) -> None:
    r = _running(ScriptedRunner())
    rt = _runtime(tmp_path, r)
    conf = rt.write_conf(WEB)
    rt.remove("web")
    assert not conf.exists()
    assert r.calls == [JLS, ("jail", "-f", str(conf), "-r", "web"), MOUNT_P, RCTL_R]
    rt.remove("web")  # idempotent


def test_remove_keeps_a_hand_edited_file(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, _running(ScriptedRunner(), "jls-empty.json"))
    conf = rt.conf_path("web")
    conf.parent.mkdir()
    conf.write_text("web { persist; }\n")
    with pytest.raises(Conflict):
        rt.remove("web")
    assert conf.read_text() == "web { persist; }\n"


# -- jls parser ---------------------------------------------------------------------


def test_parse_jls_json_on_saved_output() -> None:
    got = freebsd.parse_jls_json(_data("jls-running.json"))
    assert list(got) == ["web", "www", "www.inner", "rexbuild-0123456789ab"]
    assert got["web"] == JailStatus("web", JailState.RUNNING, 1)
    assert freebsd.parse_jls(_data("jls-running.json"))[1] == freebsd.JlsJail(
        3, "www", "/usr/jails/www"
    )


def test_parse_jls_json_empty_and_numeric_jid() -> None:
    assert freebsd.parse_jls_json(_data("jls-empty.json")) == {}
    assert freebsd.parse_jls_json('{"__version": "2", "jail-information": {}}') == {}
    # jls -v emits jid as a number ({:jid/%6d}); the parser takes either
    assert freebsd.parse_jls_json(_data("jls-verbose.json"))["svc"].pid == 83


@pytest.mark.parametrize(
    "text", ["", "jls: unknown parameter: jid", '{"jail-information": {"jail": [{"name": "x"}]}}']
)
def test_parse_jls_json_rejects_garbage(text: str) -> None:
    with pytest.raises(RuntimeBackendError):
        freebsd.parse_jls_json(text)


# -- exec ---------------------------------------------------------------------------


def test_exec_passes_exactly_env_through_env_i_and_returns_the_status(tmp_path: Path) -> None:
    r = _running(ScriptedRunner(strict=True))
    r.on(["jexec"], "boom\n", returncode=3)
    done = _runtime(tmp_path, r).exec(
        "web", ["sh", "-c", "exit 3"], env={"PATH": "/bin:/usr/bin", "A": "x y=z"}
    )
    assert done.returncode == 3
    assert r.calls == [
        JLS,
        ("jexec", "-l", "web", "/usr/bin/env", "-i", "PATH=/bin:/usr/bin", "A=x y=z",
         "sh", "-c", "exit 3"),
    ]  # fmt: skip


def test_exec_in_a_stopped_jail_is_an_error(tmp_path: Path) -> None:
    r = _running(ScriptedRunner(strict=True), "jls-empty.json")
    with pytest.raises(RuntimeBackendError, match="not running"):
        _runtime(tmp_path, r).exec("web", ["true"], env={})
    assert r.calls == [JLS]


@pytest.mark.parametrize(
    ("argv", "env"),
    [([], {}), (["A=b"], {}), (["-x"], {}), (["true"], {"BAD-NAME": "1"}), (["true"], {"": "1"})],
)
def test_jexec_argv_refuses_what_env_would_misread(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        freebsd.jexec_argv("web", argv, env)


# -- build_run ----------------------------------------------------------------------


ROOT = Path("/tank/rex/images/abc")


NET = BuildNet(
    "_build-abc", ipaddress.ip_interface("10.66.0.3/24"), ipaddress.ip_address("10.66.0.1"), "rex0"
)


def test_build_runs_the_step_with_jexec_in_a_persistent_jail_and_keeps_its_status(
    tmp_path: Path,
) -> None:
    name = freebsd.build_jail_name(ROOT)
    conf = tmp_path / "build" / f"{name}.conf"
    r = _running(ScriptedRunner(strict=True), "jls-empty.json")
    r.on(["jail"], "")
    r.on(["jexec"], "pkg: not found\n", returncode=127)
    seen: list[str] = []

    def jail_c(args: tuple[str, ...]) -> Completed:
        seen.append(conf.read_text())  # the file exists while jail(8) reads it
        return Completed(args, 0)

    r.on(["jail", "-f", str(conf), "-c"], jail_c)
    rt = FreeBSDRuntime(r, conf_dir=tmp_path / "jail.conf.d", build_dir=tmp_path / "build")
    lines: list[str] = []
    env = {"PATH": "/bin", "ASSUME_ALWAYS_YES": "yes"}
    done = rt.build_run(ROOT, "pkg install nginx", env=env, on_output=lines.append, network=NET)
    assert done.returncode == 127 and lines == ["pkg: not found\n"]  # the step's own status
    assert r.calls == [
        JLS,
        ("jail", "-f", str(conf), "-c", name),
        ("jexec", "-l", name, "/usr/bin/env", "-i", "PATH=/bin", "ASSUME_ALWAYS_YES=yes",
         "/bin/sh", "-c", "pkg install nginx"),
        ("jail", "-f", str(conf), "-r", name),
    ]  # fmt: skip
    assert 'ip4.addr = "rex0|10.66.0.3/32";' in seen[0] and "ip4=inherit" not in seen[0]
    assert "\tpersist;" in seen[0] and "allow.noset_hostname;" in seen[0]
    assert not conf.exists()
    assert rt.build_files(ROOT, NET)[0].content == seen[0]
    assert [list(c) for c in r.calls[1:]] == rt.build_commands(ROOT, "pkg install nginx", env, NET)


def test_build_without_a_network_disables_both_families(tmp_path: Path) -> None:
    text = freebsd.render_build_conf(ROOT, "rexbuild-x", None)
    assert '\tip4 = "disable";\n\tip6 = "disable";\n' in text


def test_build_jail_that_fails_to_start_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    r = _running(ScriptedRunner(strict=True), "jls-empty.json")
    r.on(["jail"], "jail: rexbuild: /sbin/ifconfig rex0 inet 10.66.0.3/32 alias: failed\n", 1)
    rt = FreeBSDRuntime(r, build_dir=tmp_path)
    with pytest.raises(RuntimeBackendError, match="ifconfig rex0"):
        rt.build_run(ROOT, "true", env={}, network=NET)
    assert list(tmp_path.iterdir()) == []
    assert [c[:2] for c in r.calls] == [JLS[:2], ("jail", "-f")]  # no jexec, no -r


def test_build_removes_a_build_jail_a_killed_run_left(tmp_path: Path) -> None:
    name = freebsd.build_jail_name(ROOT)
    r = ScriptedRunner(strict=True)
    left = {"jid": "12", "name": name, "path": str(ROOT)}
    r.on(JLS, json.dumps({"__version": "2", "jail-information": {"jail": [left]}}))
    r.on(["jail"], "")
    r.on(["jexec"], "")
    r.on(["umount"], "")
    rt = FreeBSDRuntime(r, build_dir=tmp_path, is_mount=lambda p: True)
    rt.build_run(ROOT, "true", env={})
    assert r.calls[:4] == [JLS, JLS, ("jail", "-R", name), ("umount", f"{ROOT}/dev")]


def test_build_jail_name_is_deterministic_and_has_no_dots() -> None:
    a, b = freebsd.build_jail_name(ROOT), freebsd.build_jail_name(Path("/tank/rex/images/abd"))
    assert a == freebsd.build_jail_name(ROOT) and a != b
    assert a.startswith("rexbuild-") and "." not in a


def test_status_with_usage_reads_rctl_for_the_running_jails_only(tmp_path: Path) -> None:
    r = _running(ScriptedRunner(strict=True))
    r.on(["rctl", "-u", "jail:web"], "cputime=2\nmemoryuse=4136960\nmaxproc=3\n")
    got = _runtime(tmp_path, r).status(["web", "svc"], usage=True)
    assert r.calls == [JLS, ("rctl", "-u", "jail:web")]
    assert got["web"] == JailStatus("web", JailState.RUNNING, 1, usage={
        "memory": 4136960, "pids": 3, "cpu_ns": 2_000_000_000})  # fmt: skip
    assert got["svc"] == JailStatus("svc", JailState.STOPPED)
