"""Shell completion, through the real ``rex`` and click's completion protocol
(the environment variables the generated scripts set), and through bash itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from rexcarcer.cli import complete
from rexcarcer.run import ScriptedRunner
from rexcarcer.state.base import Put
from rexcarcer.state.sqlite import SqliteStore
from tests.capability import require_tools

REX = Path(sys.executable).parent / "rex"


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REX_", "_REX_"))}
    return {**env, "REX_ROOT": str(root), "REX_DNS": "off", **extra}


def _complete(root: Path, line: str, shell: str = "bash", **extra: str) -> list[str]:
    """What ``rex`` offers for the last word of ``line`` (empty when it ends in a space)."""
    words = line.split(" ")
    # bash and zsh pass the index of the word being completed; fish passes the word
    cword = words[-1] if shell == "fish" else str(len(words) - 1)
    env = _env(root, _REX_COMPLETE=f"{shell}_complete", COMP_WORDS=line, COMP_CWORD=cword, **extra)
    done = subprocess.run([REX], env=env, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (0, ""), done
    if shell == "zsh":  # type, value, description: three lines per item
        lines = done.stdout.splitlines()
        return [lines[i + 1] for i in range(0, len(lines) - 2, 3) if lines[i] == "plain"]
    return [ln.split(",", 1)[1] for ln in done.stdout.splitlines() if ln.startswith("plain,")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A state directory whose SQLite store holds two jails (and keys that are not)."""
    store = SqliteStore(tmp_path / "state.db")
    store.commit([], [
        Put("jails/web", json.dumps({"name": "web"})),
        Put("jails/db", json.dumps({"name": "db"})),
        Put("jails/Not_A_Jail", "{}"),  # never valid: not offered
        Put("ipam/198.51.100.2", json.dumps({"jail": "web"})),
    ])  # fmt: skip
    store.close()
    return tmp_path


@pytest.mark.parametrize("shell", complete.SHELLS)
def test_rex_prints_a_script_for_each_shell(shell: str, tmp_path: Path) -> None:
    done = subprocess.run([REX, "completion", shell], env=_env(tmp_path), capture_output=True,
                          text=True, check=True)  # fmt: skip
    source = subprocess.run([REX], env=_env(tmp_path, _REX_COMPLETE=f"{shell}_source"),
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.rstrip("\n") == source.stdout.rstrip("\n")  # click 8.1 adds a newline
    assert "_REX_COMPLETE=" in done.stdout
    marker = {"bash": "complete -o nosort -F _rex_completion rex", "zsh": "#compdef rex",
              "fish": "complete --no-files --command rex"}[shell]  # fmt: skip
    assert marker in done.stdout


def test_the_bash_script_is_valid_bash(tmp_path: Path) -> None:
    script = tmp_path / "rex.bash"
    script.write_text(complete.script(_cli(), "bash"))
    subprocess.run(["bash", "-n", script], check=True)


def _cli() -> click.Group:
    from rexcarcer.cli.main import build_cli

    return build_cli()


@pytest.mark.parametrize("shell", complete.SHELLS)
def test_exec_completes_the_jails_of_the_store(root: Path, shell: str) -> None:
    assert _complete(root, "rex exec ", shell) == ["db", "web"]
    assert _complete(root, "rex exec w", shell) == ["web"]


def test_names_already_given_are_not_offered_again(root: Path) -> None:
    assert _complete(root, "rex stop web ") == ["db"]
    assert _complete(root, "rex destroy db web ") == []


def test_other_jail_verbs_and_root_given_on_the_command_line(root: Path, tmp_path: Path) -> None:
    for verb in ("start", "restart", "logs", "ca show", "ca renew"):
        assert _complete(root, f"rex {verb} ") == ["db", "web"], verb
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _complete(elsewhere, f"rex --root {root} exec ") == ["db", "web"]


def test_volumes_come_from_the_jail_records(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    vol = {"path": "/var/db", "size": None}
    store.commit([], [
        Put("jails/app", json.dumps({"name": "app", "volumes": [{"name": "data", **vol},
                                                               {"name": "logs", **vol}]})),
        Put("jails/web", json.dumps({"name": "web"})),  # no volumes
        Put("jails/bad", json.dumps({"volumes": [{"name": "Not.A.Volume", **vol}]})),
        Put("jails/odd", '"a record that is not an object"'),
    ])  # fmt: skip
    store.close()
    for shell in complete.SHELLS:
        assert _complete(tmp_path, "rex volume snapshot ", shell) == ["app.data", "app.logs"]
    assert _complete(tmp_path, "rex volume rm app.data ") == ["app.logs"]
    assert _complete(tmp_path, "rex volume rm app.l") == ["app.logs"]


def test_logs_also_offers_jails_that_only_have_a_log(root: Path) -> None:
    logs = root / "log" / "jails"
    logs.mkdir(parents=True)
    (logs / "gone.log").write_text("x\n")
    (logs / "..log").write_text("")
    assert _complete(root, "rex logs ") == ["db", "gone", "web"]


def test_no_store_offers_nothing_and_creates_nothing(tmp_path: Path) -> None:
    assert _complete(tmp_path, "rex exec ") == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"not a database" * 100, b""])
def test_a_broken_store_offers_nothing_without_a_traceback(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "state.db").write_bytes(content)
    assert _complete(tmp_path, "rex exec ") == []  # and stderr is empty, see _complete


def test_a_bad_configuration_offers_nothing(root: Path) -> None:
    assert _complete(root, "rex exec ", REX_SUBNET="not-a-subnet") == []
    assert _complete(root, "rex --config /nonexistent.toml exec ") == []


def test_in_a_cluster_jails_are_not_completed(root: Path) -> None:
    assert _complete(root, "rex exec ", REX_ETCD="http://192.0.2.1:2379") == []


def test_commands_and_options_come_from_click(root: Path) -> None:
    assert _complete(root, "rex ba") == ["base"]
    assert "rm" in _complete(root, "rex base ")
    assert "--host" in _complete(root, "rex up --")


def test_hosts_come_from_the_cache_rex_hosts_writes(root: Path) -> None:
    assert _complete(root, "rex up --host ") == []
    complete.remember_hosts(root, ["h2", "h1", "h1", "Bad Host"])
    data = json.loads((root / "cache" / "hosts.json").read_text())
    assert data == {"hosts": ["Bad Host", "h1", "h2"]}
    assert _complete(root, "rex up --host ") == ["h1", "h2"]
    assert _complete(root, "rex plan --host h2") == ["h2"]
    (root / "cache" / "hosts.json").write_text("[not json")
    assert _complete(root, "rex up --host ") == []


def test_remembering_hosts_never_fails_the_command(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the directory should be")
    complete.remember_hosts(tmp_path, ["h1"])  # logged, not raised


ZFS_LIST = (
    "tank/rex/bases\t-\t/tank/rex/bases\n"
    "tank/rex/bases/busybox\t-\t/tank/rex/bases/busybox\n"
    "tank/rex/bases/_recv-1a2b\t-\t/tank/rex/bases/_recv-1a2b\n"
    "tank/rex/bases/FreeBSD-14.1\t-\t/tank/rex/bases/FreeBSD-14.1\n"
)


def test_bases_are_the_children_of_the_bases_dataset() -> None:
    runner = ScriptedRunner()
    runner.on(["zfs", "list"], ZFS_LIST)
    assert complete.base_names_with(runner, "tank/rex") == ["busybox", "FreeBSD-14.1"]
    assert runner.calls[0][-3:] == ("-d", "1", "tank/rex/bases")


def test_no_bases_dataset_offers_nothing() -> None:
    runner = ScriptedRunner()
    runner.on(["zfs", "list"], "", returncode=1)
    assert complete.base_names_with(runner, "tank/rex") == []


def test_base_rm_without_zfs_offers_nothing(root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    assert _complete(root, "rex base rm ", PATH=str(empty)) == []


def test_bash_itself_completes_jail_names(root: Path, tmp_path: Path) -> None:
    """The generated script, sourced by bash, fills COMPREPLY from rex."""
    require_tools("bash")
    script = tmp_path / "rex.bash"
    script.write_text(complete.script(_cli(), "bash"))
    probe = (
        f"source {script}\n"
        'COMP_WORDS=(rex exec ""); COMP_CWORD=2\n'
        "_rex_completion rex '' exec\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = _env(root, PATH=f"{REX.parent}:{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True)
    assert (done.returncode, done.stdout.split(), done.stderr) == (0, ["db", "web"], "")
