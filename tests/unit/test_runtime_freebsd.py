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
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime import freebsd
from rexcarcer.runtime.base import JailSpec, JailState, JailStatus
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


def test_no_address_disables_both_families_and_writes_no_allow_lines() -> None:
    spec = JailSpec("solo", Path("/tank/rex/jails/solo"), "solo", None, "rex0")
    text = freebsd.render_jail_conf(spec)
    assert '\tip4 = "disable";\n\tip6 = "disable";\n' in text
    assert "addr" not in text and "osrelease" not in text and "allow." not in text


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
        freebsd.build_argv(Path("relative/root"), "true", {})


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


def test_build_run_argv_and_nothing_left_when_the_step_ends_clean(tmp_path: Path) -> None:
    name = freebsd.build_jail_name(ROOT)
    r = _running(ScriptedRunner(strict=True), "jls-empty.json")
    r.on(["jail", "-c"], "installing\n", returncode=1)
    lines: list[str] = []
    done = _runtime(tmp_path, r).build_run(
        ROOT, "pkg install -y nginx && echo '$HOME'", env={"PATH": "/bin", "X": "1"},
        on_output=lines.append,
    )  # fmt: skip
    assert done.returncode == 1 and lines == ["installing\n"]
    assert r.calls == [
        ("jail", "-c", "path=/tank/rex/images/abc", f"name={name}", "host.hostname=build",
         "ip4=inherit", "mount.devfs", "devfs_ruleset=4", "exec.clean",
         "command=/usr/bin/env", "-i", "PATH=/bin", "X=1",
         "/bin/sh", "-c", "pkg install -y nginx && echo '$HOME'"),
        JLS,
    ]  # fmt: skip


def test_build_run_removes_a_jail_kept_alive_and_unmounts_devfs(tmp_path: Path) -> None:
    name = freebsd.build_jail_name(ROOT)
    r = ScriptedRunner(strict=True)
    left = {"jid": "12", "name": name, "path": str(ROOT)}
    r.on(JLS, json.dumps({"__version": "2", "jail-information": {"jail": [left]}}))
    r.on(["jail"], "")
    r.on(["umount"], "")
    _runtime(tmp_path, r, mounted=True).build_run(ROOT, "service foo start", env={})
    assert r.calls[1:] == [JLS, ("jail", "-R", name), ("umount", f"{ROOT}/dev")]


def test_build_jail_name_is_deterministic_and_has_no_dots() -> None:
    a, b = freebsd.build_jail_name(ROOT), freebsd.build_jail_name(Path("/tank/rex/images/abd"))
    assert a == freebsd.build_jail_name(ROOT) and a != b
    assert a.startswith("rexbuild-") and "." not in a
