"""Runner, errors, configuration and /proc parsing."""

from __future__ import annotations

import ipaddress
import signal
from pathlib import Path

import pytest

from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.errors import CommandFailed, ConfigError, RexError, all_error_classes
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.run import Completed, ScriptedRunner, SubprocessRunner, exit_status
from rexcarcer.runtime import procfs


def test_exit_codes_are_unique() -> None:
    import importlib
    import pkgutil

    import rexcarcer

    for mod in pkgutil.walk_packages(rexcarcer.__path__, "rexcarcer."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)  # every error class, wherever it lives
    own = [c for c in all_error_classes() if "exit_code" in vars(c)]
    codes = [c.exit_code for c in own]
    assert len(own) > 20
    assert len(codes) == len(set(codes)), sorted((c.exit_code, c.__name__) for c in own)


def test_subprocess_runner_reports_argv_status_and_stderr() -> None:
    r = SubprocessRunner()
    assert r.run(["sh", "-c", "echo out"]).stdout == "out\n"
    with pytest.raises(CommandFailed) as err:
        r.run(["sh", "-c", "echo oops >&2; exit 4"])
    assert err.value.returncode == 4
    assert "sh -c 'echo oops >&2; exit 4'" in err.value.message
    assert err.value.message.endswith(": oops")
    assert not r.run(["false"], check=False).ok


def test_subprocess_runner_streams_lines() -> None:
    lines: list[str] = []
    done = SubprocessRunner().run(["sh", "-c", "echo a; echo b >&2"], on_output=lines.append)
    assert sorted(lines) == ["a\n", "b\n"]
    assert done.ok


@pytest.mark.parametrize(
    ("returncode", "status"), [(0, 0), (7, 7), (255, 255), (-9, 137), (-11, 139), (-15, 143)]
)
def test_exit_status_is_128_plus_the_signal_as_in_sh(returncode: int, status: int) -> None:
    assert exit_status(returncode) == status
    assert Completed(("x",), returncode).exit_status == status


@pytest.mark.parametrize("mode", ["captured", "streamed", "interactive"])
def test_a_command_killed_by_a_signal_exits_128_plus_n(mode: str) -> None:
    """``rex exec`` passes the status on: locally (interactive), through an agent
    (streamed), or captured; sh(1) says 139 for SIGSEGV, so does rex."""
    argv = ["sh", "-c", "kill -SEGV $$"]
    runner = SubprocessRunner()
    if mode == "captured":
        done = runner.run(argv, check=False)
    elif mode == "streamed":
        done = runner.run(argv, check=False, on_output=lambda line: None)
    else:
        done = runner.run(argv, check=False, interactive=True)
    assert done.returncode == -signal.SIGSEGV
    assert done.exit_status == 128 + signal.SIGSEGV == 139
    shell = runner.run(["sh", "-c", 'sh -c "kill -SEGV \\$\\$"; echo $?'], check=False)
    assert shell.stdout.strip() == str(done.exit_status)  # what the shell itself says


def test_missing_command_is_a_clear_error() -> None:
    with pytest.raises(RexError, match="command not found: no-such-tool-xyz"):
        SubprocessRunner().run(["no-such-tool-xyz"])


def test_scripted_runner_longest_prefix_wins() -> None:
    r = ScriptedRunner(strict=True)
    r.on(["zfs"], "generic")
    r.on(["zfs", "list"], "specific")
    assert r.run(["zfs", "list", "-H"]).stdout == "specific"
    assert r.run(["zfs", "get"]).stdout == "generic"
    with pytest.raises(AssertionError):
        r.run(["ip", "link"])


def test_config_layers(tmp_path: Path) -> None:
    (tmp_path / "rexcarcer.toml").write_text('zone = "corp.internal"\nsubnet = "10.9.0.0/24"\n')
    cfg = load_config(root=tmp_path, environ={"REX_SUBNET": "203.0.113.0/25"})
    assert cfg.zone == "corp.internal"  # from the file
    assert cfg.subnet == ipaddress.ip_network("203.0.113.0/25")  # env beats file
    assert cfg.host_address == ipaddress.ip_address("203.0.113.1")
    assert cfg.root == tmp_path


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"REX_SUBNET": "203.0.113.5/24"}, "REX_SUBNET"),
        ({"REX_SUBNET": "203.0.113.0/31"}, "too small"),
        ({"REX_RUNTIME": "solaris"}, "REX_RUNTIME"),
        ({"REX_DATASET": "nopool"}, "POOL/PATH"),
        ({"REX_INTERFACE": "a-very-long-interface-name"}, "15"),
        ({"REX_INTERFACE": "rex 0"}, "bad interface name"),
        ({"REX_PUBLIC_IPS": "198.51.100.16/28"}, "@interface"),
        ({"REX_PUBLIC_IPS": "198.51.100.17/28@em0"}, "REX_PUBLIC_IPS"),
        ({"REX_PUBLIC_IPS": "198.51.100.16/28@em 0"}, "bad interface name"),
        ({"REX_PUBLIC_IPS": "198.51.100.16/28@a-very-long-interface"}, "15"),
        ({"REX_PUBLIC_IPS": "198.51.100.128/25@em0"}, "overlaps 198.51.100.0/24"),
        ({"REX_PUBLIC_IPS": "2001:db8::/48@em0,2001:db8::/64@em1"}, "overlaps 2001:db8::/48"),
        ({"REX_API_PORT": "70000"}, "not a port"),
        ({"REX_API_PORT": "https"}, "REX_API_PORT"),
        ({"REX_CLUSTER_CIDR": "203.0.113.7/24"}, "REX_CLUSTER_CIDR"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(root=tmp_path, environ=env)
    assert needle in err.value.message + (err.value.hint or "")


def test_jails_route_the_cluster_cidr_only_in_cluster_mode(tmp_path: Path) -> None:
    from rexcarcer.platform.base import jail_routes

    cidr = {"REX_CLUSTER_CIDR": "203.0.113.0/24"}
    assert jail_routes(load_config(root=tmp_path, environ=cidr)) == ()
    clustered = load_config(root=tmp_path, environ={**cidr, "REX_ETCD": "http://198.51.100.1:2379"})
    assert jail_routes(clustered) == (ipaddress.ip_network("203.0.113.0/24"),)


def test_unknown_toml_key(tmp_path: Path) -> None:
    (tmp_path / "rexcarcer.toml").write_text("zonee = 'x'\n")
    with pytest.raises(ConfigError, match="unknown setting 'zonee'"):
        load_config(root=tmp_path, environ={})


def test_runtime_default_follows_the_os(tmp_path: Path) -> None:
    assert load_config(root=tmp_path, environ={}).runtime is PlatformKind.LINUX


def test_the_fake_runtime_is_only_for_test_runs(tmp_path: Path) -> None:
    """REX_RUNTIME=fake (or runtime = "fake" in the TOML file) would leave a host
    that starts no jail; only the environment of a test run may select it."""
    for env in ({"REX_RUNTIME": "fake"}, {"REX_RUNTIME": "fake", "REX_TESTING": "yes"}):
        with pytest.raises(ConfigError, match="runtime 'fake' is the unit tests'") as err:
            load_config(root=tmp_path, environ=env)
        assert "REX_TESTING=1" in (err.value.hint or "")
    (tmp_path / "rexcarcer.toml").write_text('runtime = "fake"\n')
    with pytest.raises(ConfigError, match="runtime 'fake'"):
        load_config(root=tmp_path, environ={})
    assert load_config(root=tmp_path, environ={"REX_TESTING": "1"}).runtime is PlatformKind.FAKE
    assert load_config(root=tmp_path, environ=TESTING_ENV).runtime is PlatformKind.FAKE


def test_only_a_test_run_may_name_the_boot(tmp_path: Path) -> None:
    """REX_BOOT_ID_FILE stands in for the OS's boot id (a simulated reboot,
    tests/integration/reboot.py); a host that set it by mistake would see a
    new boot whenever the file changes, so only a test run may."""
    boot = tmp_path / "boot_id"
    boot.write_text("boot-a\n")
    with pytest.raises(ConfigError, match="REX_BOOT_ID_FILE is set") as err:
        load_config(root=tmp_path, environ={"REX_BOOT_ID_FILE": str(boot)})
    assert "REX_TESTING=1" in (err.value.hint or "")
    config = load_config(root=tmp_path, environ={"REX_RUNTIME": "linux", "REX_TESTING": "1",
                                                 "REX_BOOT_ID_FILE": str(boot)})  # fmt: skip
    assert config.boot_id_file == boot
    assert load_config(root=tmp_path, environ={}).boot_id_file is None
    from rexcarcer.platform.linux import LinuxPlatform

    linux = LinuxPlatform(ScriptedRunner([]), config)
    assert linux.boot_id() == "boot-a"
    boot.write_text("boot-b\n")  # the host "rebooted"
    assert linux.boot_id() == "boot-b"


def test_the_cli_refuses_the_fake_runtime(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {"PATH": os.environ["PATH"], "REX_ROOT": str(tmp_path), "REX_RUNTIME": "fake"}
    done = subprocess.run([sys.executable, "-m", "rexcarcer", "doctor"], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == ConfigError.exit_code, done.stderr
    assert "error: runtime 'fake' is the unit tests' in-memory runtime" in done.stderr


def test_parse_stat_with_spaces_and_parens_in_comm() -> None:
    text = "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 0 0"
    st = procfs.parse_stat(text)
    assert (st.pid, st.state, st.ppid, st.starttime) == (1234, "S", 1, 98765)


def test_public_ranges_for_jails(tmp_path: Path) -> None:
    from rexcarcer.config import PublicRange

    (tmp_path / "rexcarcer.toml").write_text(
        'subnet = "203.0.113.0/24"\npublic_ips = ["198.51.100.16/28@em0", "2001:db8:7::/64@em1"]\n'
    )
    cfg = load_config(root=tmp_path, environ={})
    assert cfg.public_ips == (
        PublicRange(ipaddress.ip_network("198.51.100.16/28"), "em0"),
        PublicRange(ipaddress.ip_network("2001:db8:7::/64"), "em1"),
    )
    assert cfg.interface_for(ipaddress.ip_address("198.51.100.20")) == "em0"
    assert cfg.interface_for(ipaddress.ip_address("203.0.113.5")) == "rex0"
    assert cfg.interface_for(None) == "rex0"
    assert load_config(root=tmp_path, environ={"REX_PUBLIC_IPS": ""}).public_ips == cfg.public_ips
    assert load_config(root=tmp_path / "x", environ={}).public_ips == ()
    assert cfg.api_port == 7443
