"""The front door's thin client (cli/thin.py): which command lines it takes,
how it names the file and finds the agent, and that its renderers print what
the model's own objects printed (tests/integration/test_thin_client.py runs it
against a real agent)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path, PurePosixPath

import pytest

from rexcarcer.cli import render, thin
from rexcarcer.model.jail import JailInfo, Limits, PublishEntry, ServiceEntry
from rexcarcer.model.plan import Action, FileWrite
from rexcarcer.rexfile.parser import MAX_FILE

pytestmark = pytest.mark.unit


def test_the_file_limit_is_the_parsers() -> None:
    assert thin.MAX_REXFILE == MAX_FILE


def test_the_front_door_sends_the_thin_clients_verbs_to_it() -> None:
    from rexcarcer.cli import fast

    assert fast.THIN_VERBS == thin.VERBS  # kept apart: fast.py imports thin.py only for them


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["ls"], ("ls", "text", None, {})),
        (["-o", "json", "ls"], ("ls", "json", None, {})),
        (["--output=wide", "ls"], ("ls", "wide", None, {})),
        (["ls", "-o", "wide"], ("ls", "wide", None, {})),
        (["ls", "--output", "json"], ("ls", "json", None, {})),
        (["up", "a.rex"], ("up", "text", "a.rex", {})),
        (["up", "a.rex", "--name", "web"], ("up", "text", "a.rex", {"name": "web"})),
        (["up", "--name=web", "a.rex", "-o", "json"], ("up", "json", "a.rex", {"name": "web"})),
        (["plan", "x/a.rex", "--host", "h2"], ("plan", "text", "x/a.rex", {"host": "h2"})),
    ],
)
def test_plain_forms_are_taken(argv: list[str], want: tuple[object, ...]) -> None:
    req = thin.parse(argv)
    assert req is not None
    assert (req.verb, req.output, req.file, req.options) == want


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["ls", "extra"],
        ["ls", "--name", "x"],
        ["ls", "-h"],
        ["up"],
        ["up", "a", "b"],
        ["up", "a.rex", "--name"],
        ["up", "a.rex", "--name", "-x"],
        ["up", "a.rex", "--name="],
        ["up", "a.rex", "--name", "a", "--name", "b"],
        ["-o", "json", "ls", "-o", "text"],
        ["ls", "-o", "yaml"],
        ["plan", "a.rex", "--platform", "freebsd"],
        ["--debug", "ls"],
        ["--root", "/x", "ls"],
        ["up", "-", "a.rex"],
        ["up", "a.rex", "--", "x"],
        ["up", "--help"],
        ["destroy"],
        ["destroy", "--volumes"],
        ["destroy", "x", "--volumes", "--volumes"],
        ["destroy", "x", "--force"],
        ["-o", "json", "destroy", "x"],
        ["destroy", "x", "-h"],
        ["ls", "-o=json"],
    ],
)
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert thin.parse(argv) is None


@pytest.mark.parametrize(
    ("argv", "names", "volumes"),
    [
        (["destroy", "x"], ("x",), False),
        (["destroy", "x", "y"], ("x", "y"), False),
        (["destroy", "--volumes", "x"], ("x",), True),
        (["destroy", "x", "--volumes", "y"], ("x", "y"), True),
    ],
)
def test_destroy_forms_are_taken(argv: list[str], names: tuple[str, ...], volumes: bool) -> None:
    req = thin.parse(argv)
    assert req is not None and req.verb == "destroy"
    assert req.names == names and ("volumes" in req.options) == volumes


@pytest.mark.parametrize(
    "path",
    ["a.rex", "./a.rex", "x//y/./a.rex", "x/a.rex/", "/a.rex", "//a.rex", "///a.rex", "../a",
     ".", "./", "", "/", "//", "a/../b", "x/./", "////x//"],
)  # fmt: skip
def test_the_file_is_named_as_pathlib_names_it(path: str) -> None:
    assert thin.pathstr(path) == str(PurePosixPath(path))
    if str(PurePosixPath(path)) != ".":  # a directory: never sent (not a regular file)
        assert thin.pathstr(path).rpartition("/")[2] == PurePosixPath(path).name


def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"REX_ROOT": str(tmp_path / "state")}
    state = str(tmp_path / "state")
    assert thin.settings(env) == (state, f"{state}/run/agent.sock", False)
    env.update(REX_AGENT_SOCKET="a.sock", REX_ETCD=",https://e1:2379")
    assert thin.settings(env) == (str(tmp_path / "state"), str(tmp_path / "a.sock"), True)
    assert thin.settings({"REX_ROOT": ""}) is None  # config.py decides what that means


def test_a_configuration_file_is_read_by_config_py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "rexcarcer.toml").write_text(f'agent_socket = "{tmp_path}/s.sock"\netcd = "x:1"\n')
    for key in ("REX_AGENT_SOCKET", "REX_ETCD"):
        monkeypatch.delenv(key, raising=False)
    assert thin.settings({"REX_ROOT": str(state)}) == (str(state), f"{tmp_path}/s.sock", True)
    (state / "rexcarcer.toml").write_text("no_such_setting = 1\n")
    assert thin.settings({"REX_ROOT": str(state)}) is None


def test_ls_rows_from_json_are_the_models() -> None:
    web = JailInfo("web", "running", "203.0.113.5/24", "web.jail.rex.internal",
                   (ServiceEntry("http", 80, "tcp"), ServiceEntry("dns", 53, "udp")),
                   "busybox", "images/abc@img", "h1", Limits(), {}, 1796000000, "healthy",
                   (PublishEntry(8080, 80, "tcp", "198.51.100.7"),
                    PublishEntry(53, 53, "udp", None)))  # fmt: skip
    bare = JailInfo("db", "stopped", None, "", (), "busybox", "", "", Limits(), {}, 0, None, ())
    text = render.ls_table([web.as_json(), bare.as_json()], wide=False).splitlines()
    assert text[0].split() == ["NAME", "STATE", "HEALTH", "IP", "HOSTNAME", "SERVICES",
                               "PUBLISHED", "BASE", "HOST"]  # fmt: skip
    assert text[1].split() == ["web", "running", "healthy", "203.0.113.5/24",
                               "web.jail.rex.internal", "http:80,dns:53",
                               "198.51.100.7:8080->80/tcp,53->53/udp", "busybox", "h1"]  # fmt: skip
    assert text[2].split() == ["db", "stopped", "-", "-", "-", "-", "-", "busybox", "-"]
    wide = render.ls_table([web.as_json()], wide=True).splitlines()[1].split()
    assert wide[5] == "http:80/tcp,dns:53/udp"
    when = dt.datetime.fromtimestamp(1796000000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert wide[8:] == ["images/abc@img", when, "h1"]
    assert ",".join(map(str, web.publish)) == wide[6]  # PublishEntry.__str__


def test_up_and_plan_text_from_json() -> None:
    web = JailInfo("web", "running", "203.0.113.5/24", "web.jail.rex.internal", (), "busybox",
                   "", "h1", Limits(), {}, 1, None, ())  # fmt: skip
    assert render.up_summary(web.as_json(), cluster=False) == \
        "web is running: 203.0.113.5/24 (web.jail.rex.internal)"  # fmt: skip
    assert render.up_summary(web.as_json(), cluster=True).endswith(" on h1")
    action = Action("files", "Writing files", commands=(("ip", "addr", "add", "a b"),),
                    notes=("then /etc/rc",),
                    files=(FileWrite("/etc/hosts", 0o644, "a\nb", "the names"),
                           FileWrite("/etc/x", 0o600, None, "")))  # fmt: skip
    want = [f"{action.kind:8} {action.description}"]
    want += [f"           {line}" for line in action.lines()[:4]]
    want += ["           $ ip addr add 'a b'", "           $ then /etc/rc"]
    assert render.plan_lines([action.as_json()]) == want
    assert render.plan_lines([]) == []
