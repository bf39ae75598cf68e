"""cli/fast.py, the ``rex`` front door: pre-rendered help pages identical to
click's, the exec fast path's shape checks, and that neither imports click."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rexcarcer.cli import fast
from rexcarcer.cli.helpgen import COLUMNS, paths, render
from rexcarcer.cli.helptext import PAGES
from rexcarcer.runtime import direct

HELPTEXT = Path(fast.__file__).with_name("helptext.py")
REX = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'rex'; from rexcarcer.cli.fast import main; main()",
]
CLICK = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'rex'; from rexcarcer.cli.main import main; main()",
]
# which modules the fast door loaded, printed as it exits
PROBE = (
    "import atexit, sys; sys.argv[0] = 'rex'; "
    "atexit.register(lambda: sys.stderr.write(repr(sorted(sys.modules)))); "
    "from rexcarcer.cli.fast import main; main()"
)


def _run(argv: list[str], *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, check=False)


def test_the_help_pages_are_those_click_renders_now() -> None:
    assert HELPTEXT.read_text() == render(), (
        "cli/helptext.py is stale: python -m rexcarcer.cli.helpgen > src/rexcarcer/cli/helptext.py"
    )
    assert len(PAGES) == len(paths()) * len(COLUMNS)


@pytest.mark.parametrize(
    "args", [["--help"], ["up", "-h"], ["dns", "ls", "--help"], ["ca", "--help"]]
)
@pytest.mark.parametrize("columns", [80, 100, 140])
def test_the_fast_door_prints_what_click_prints(args: list[str], columns: int) -> None:
    quick, slow = _run(REX, *args, columns=columns), _run(CLICK, *args, columns=columns)
    assert (quick.returncode, quick.stdout, quick.stderr) == (0, slow.stdout, slow.stderr)
    assert quick.stdout.startswith(f"Usage: rex {' '.join(args[:-1])}".rstrip())


def test_help_from_the_fast_door_imports_neither_click_nor_the_commands() -> None:
    done = _run([sys.executable, "-c", PROBE], "dns", "--help")
    assert done.returncode == 0 and done.stdout.startswith("Usage: rex dns")
    loaded = set(ast.literal_eval(done.stderr))
    assert "click" not in loaded and "rexcarcer.cli.main" not in loaded
    assert not any(m.startswith(("rexcarcer.config", "rexcarcer.cli.context")) for m in loaded)


def test_other_widths_and_other_arguments_go_to_click() -> None:
    assert fast.help_page(["--help"], 80) == PAGES[("rex", 78)]
    assert fast.help_page(["up", "--help"], 240) == PAGES[("rex up", 98)]
    assert fast.help_page(["--help"], 90) is None  # not pre-rendered
    assert fast.help_page(["--debug", "--help"], 80) is None  # an option first
    assert fast.help_page(["exec", "web", "--help"], 80) is None  # not a command path
    assert fast.help_page(["up"], 80) is None
    assert fast.help_page([], 80) is None
    # a width that is not pre-rendered still gets click's page, through click
    done = _run([sys.executable, "-c", PROBE], "--help", columns=90)
    assert done.stdout == _run(CLICK, "--help", columns=90).stdout
    assert "'click'" in done.stderr


def test_width_follows_click() -> None:
    assert [fast.width_of(c) for c in (20, 52, 80, 99, 100, 300)] == [50, 50, 78, 97, 98, 98]


def test_terminal_columns_reads_COLUMNS_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "123")
    assert fast.terminal_columns() == 123
    monkeypatch.setenv("COLUMNS", "junk")
    assert fast.terminal_columns() > 0


def test_only_exec_name_dashdash_command_is_an_exec_request() -> None:
    assert fast.exec_request(["exec", "web", "--", "ls", "-l"]) == ("web", ["ls", "-l"])
    assert fast.exec_request(["exec", "web", "--", "--help"]) == ("web", ["--help"])
    assert fast.exec_request(["exec", "web", "ls"]) is None  # click may parse its options
    assert fast.exec_request(["exec", "web", "--"]) is None
    assert fast.exec_request(["exec", "-h", "--", "x"]) is None
    assert fast.exec_request(["--debug", "exec", "web", "--", "x"]) is None
    assert fast.exec_request(["ls"]) is None
    assert fast.exec_request(["console", "web"]) == ("web", ["/bin/sh", "-l"])
    assert fast.exec_request(["console", "--help"]) is None
    assert fast.exec_request(["console", "web", "x"]) is None


def test_state_root_follows_REX_ROOT(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REX_ROOT", str(tmp_path))
    assert fast.state_root() == str(tmp_path)
    monkeypatch.setenv("REX_ROOT", "")
    assert fast.state_root() is None  # config.py says what that means


def test_plausible_names_are_jail_names() -> None:
    from rexcarcer.names import jail_name_problem

    for name in ("web", "a", "a-1", "x" * 63, "-a", "a-", "A", "a.b", "../x", "", "x" * 64, "a/b"):
        if direct.plausible_name(name):
            assert jail_name_problem(name) is None, name
    assert direct.plausible_name("web") and not direct.plausible_name("../etc")


def _run_file(tmp_path: Path, name: str, *, init_pid: int, init_start: int,
              exec_env: dict[str, str], cgroup_procs: list[str]) -> Path:  # fmt: skip
    """The jail's exec file as runtime/linux.py writes it."""
    data = direct.exec_record(init_pid, init_start, exec_env, cgroup_procs)
    (tmp_path / f"{name}.exec").write_bytes(data)
    return tmp_path


def test_read_run_wants_a_live_init_and_its_start_time(tmp_path: Path) -> None:
    me = os.getpid()
    start = direct.start_time(me)
    assert isinstance(start, int)
    env = {"PATH": "/bin", "GREETING": "hi there", "EQ": "a=b", "EMPTY": ""}
    procs = ["/sys/fs/cgroup/pids/rexcarcer/rex-abc/web/cgroup.procs", "/sys/fs/cgroup/x y"]
    d = _run_file(tmp_path, "web", init_pid=me, init_start=start, exec_env=env, cgroup_procs=procs)
    assert direct.read_run(str(d), "web") == (me, env, procs)
    _run_file(tmp_path, "bare", init_pid=me, init_start=start, exec_env={}, cgroup_procs=[])
    assert direct.read_run(str(d), "bare") == (me, {}, [])
    # another process under a reused PID: not the jail's init
    _run_file(tmp_path, "old", init_pid=me, init_start=start + 1, exec_env=env, cgroup_procs=[])
    assert direct.read_run(str(d), "old") is None
    good = direct.exec_record(me, start, env, procs)
    for bad in [b"", b"{}", good.replace(b"rex-exec 1", b"rex-exec 2"), good[: good.index(b"PATH")],
                good.replace(b"GREETING=", b"GREETING"), b"rex-exec 1\0x\01\00",
                b"rex-exec 1\0%d\0%d\0-1" % (me, start), b"rex-exec 1\0%d\0%d\09" % (me, start),
                good + b"\xff"]:  # fmt: skip
        (tmp_path / "junk.exec").write_bytes(bad)
        assert direct.read_run(str(d), "junk") is None, bad
    assert direct.parse_exec(good[: good.index(b"PATH")] + b"PATH=/bin") is None  # count says 4
    (tmp_path / "run.json").write_text("{}")  # the run file alone: the engine's path
    assert direct.read_run(str(d), "run") is None
    assert direct.read_run(str(d), "none") is None


def test_enter_if_local_returns_when_the_jail_is_not_ours(tmp_path: Path) -> None:
    direct.enter_if_local(str(tmp_path), "web", ["true"])  # no run file
    direct.enter_if_local(str(tmp_path), "../x", ["true"])
    _run_file(tmp_path, "dead", init_pid=2**22 + 1, init_start=1, exec_env={}, cgroup_procs=[])
    direct.enter_if_local(str(tmp_path), "dead", ["true"])
    me = os.getpid()
    gone = str(tmp_path / "gone" / "cgroup.procs")
    _run_file(tmp_path, "ungrouped", init_pid=me, init_start=direct.start_time(me), exec_env={},
              cgroup_procs=[gone])  # fmt: skip
    direct.enter_if_local(str(tmp_path), "ungrouped", ["true"])  # a group is gone: returns


def test_verbs_names_the_module_that_registers_each_verb() -> None:
    import importlib

    import click

    from rexcarcer.cli.main import VERBS, build_cli

    assert set(VERBS) == set(build_cli().commands)
    for module in set(VERBS.values()):
        group = click.Group()
        importlib.import_module(f"rexcarcer.cli.{module}").register(group)
        assert {v for v, m in VERBS.items() if m == module} == set(group.commands), module


def _modules_after(code: str, *args: str) -> set[str]:
    probe = (
        "import atexit, sys; sys.argv[0] = 'rex'; "
        "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + repr(sorted(sys.modules)))); "
        + code
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return set(ast.literal_eval(done.stderr.rsplit("MODULES ", 1)[1]))


def test_a_verb_loads_its_own_module_and_no_other() -> None:
    loaded = _modules_after("from rexcarcer.cli.main import main; main()", "ls", "--help")
    assert "rexcarcer.cli.jail_cmds" in loaded
    others = {f"rexcarcer.cli.{m}" for m in ("files_cmds", "ca_cmds", "cluster_cmds", "gen_cmds")}
    assert not loaded & others
    assert "tarfile" not in loaded


def test_the_agents_door_needs_no_engine() -> None:
    loaded = _modules_after("import rexcarcer.service.connect, rexcarcer.service.socket")
    assert not any(m.startswith("rexcarcer.engine") for m in loaded)
    assert "tarfile" not in loaded and "rexcarcer.service.local" not in loaded


def test_the_environment_is_the_one_jailenters_interpreter_passes() -> None:
    """PEP 538: python3 -I -S jailenter.py, in a C locale, exports LC_CTYPE=C.UTF-8."""
    base = {"PATH": "/bin", "HOME": "/root"}
    assert direct.as_jailenter_passes(base) == {**base, "LC_CTYPE": "C.UTF-8"}
    assert direct.as_jailenter_passes({**base, "LANG": "C"})["LC_CTYPE"] == "C.UTF-8"
    for kept in ({"LC_ALL": "C"}, {"LANG": "en_US.UTF-8"}, {"LC_CTYPE": "de_DE.UTF-8"}):
        assert direct.as_jailenter_passes({**base, **kept}) == {**base, **kept}
    # the real interpreter agrees, for the environment every jail gets
    from rexcarcer.runtime.base import jail_env

    env = jail_env(())
    code = "import os, sys; sys.stdout.write(repr(sorted(os.environ.items())))"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert dict(ast.literal_eval(done.stdout)) == direct.as_jailenter_passes(env)


def test_join_cgroups_joins_all_or_nothing(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "cgroup.procs", tmp_path / "b" / "cgroup.procs"]
    files[0].parent.mkdir()
    files[0].write_text("")
    # one group gone: nothing joined, the engine's path reports it
    assert direct.join_cgroups([str(f) for f in files]) is False
    assert files[0].read_text() == ""
    files[1].parent.mkdir()
    files[1].write_text("")
    assert direct.join_cgroups([str(f) for f in files]) is True
    assert [f.read_text() for f in files] == [str(os.getpid())] * 2
    assert direct.join_cgroups([]) is True  # a runtime without cgroups


def test_cgroupjoin_writes_0_to_a_v1_groups_tasks_and_the_pid_to_v2s_procs(tmp_path: Path) -> None:
    from rexcarcer import cgroupjoin

    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    for d in (v1, v2):
        d.mkdir()
        (d / "cgroup.procs").write_text("")
    (v1 / "tasks").write_text("")
    cgroupjoin.join(str(v1 / "cgroup.procs"))
    cgroupjoin.join(str(v2 / "cgroup.procs"))
    # v1: the calling thread, without the global lock; v2: the process
    assert (v1 / "tasks").read_text() == "0" and (v1 / "cgroup.procs").read_text() == ""
    assert (v2 / "cgroup.procs").read_text() == str(os.getpid())
    with pytest.raises(OSError):
        cgroupjoin.join(str(tmp_path / "gone" / "cgroup.procs"))
