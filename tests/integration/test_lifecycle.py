"""End to end on the platform the tests run on (Linux: zfs-fuse and namespaces;
FreeBSD: OpenZFS and jail(8)), through the rex CLI."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from tests.integration.conftest import Rex, copy_example, sh


def test_hello_example_serves_its_page_to_a_second_jail(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    up = rex.run("up", ex / "hello.rex")
    assert "Step 1/2: PROVISION COPY index.html" in up.stderr
    rex.run("up", ex / "client.rex")
    jails = rex.jails()
    assert jails["hello"]["state"] == "running"
    assert jails["client"]["state"] == "running"
    assert jails["hello"]["services"] == [{"name": "web", "port": 80, "proto": "tcp"}]
    ip = rex.ip_of("hello")
    assert ip.startswith("203.0.113.")
    page = rex.run("exec", "client", "--", *rex.fetch(f"http://{ip}/"))
    assert page.stdout.strip() == "<h1>hello from a RexCarcer jail</h1>"
    # the host reaches it too (over the bridge; on FreeBSD the alias is the host's)
    assert "hello from" in rex.in_netns(*rex.host_fetch(f"http://{ip}/")).stdout


def test_second_up_changes_nothing(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    before = rex.jails()["hello"]
    again = rex.run("up", ex / "hello.rex")
    assert "Step" not in again.stderr and "Starting" not in again.stderr, again.stderr
    after = rex.jails()["hello"]
    # usage is what the jail's processes use now (cgroup counters), not what rex
    # set: its memory counter moves by the page cache the kernel charges it
    assert {**after, "usage": None} == {**before, "usage": None}
    assert set(after["usage"]) == set(before["usage"])
    plan = rex.json("plan", str(ex / "hello.rex"))
    assert [a["action"] for a in plan] == ["none"]  # type: ignore[index]


def test_exec_passes_exit_status_env_hostname_and_files(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    assert rex.run("exec", "hello", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    # killed by SIGSEGV: 128+11, as sh(1) reports it (not 256-11)
    segv = rex.run("exec", "hello", "--", "sh", "-c", "kill -SEGV $$", check=False)
    assert segv.returncode == 139, segv
    out = rex.run("exec", "hello", "--", "sh", "-c", "echo $GREETING; hostname").stdout.split()
    assert out == ["hello", "hello.jail.rex.internal"]
    resolv = rex.run("exec", "hello", "--", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 203.0.113.1" in resolv
    assert "search svc.rex.internal jail.rex.internal" in resolv
    env = rex.run("exec", "hello", "--", "cat", "/etc/rexcarcer/env").stdout
    assert env == "GREETING='hello'\n"


def test_stop_start_restart_destroy_leave_nothing(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    rex.run("stop", "hello")
    assert rex.jails()["hello"]["state"] == "stopped"
    assert rex.run("exec", "hello", "--", "true", check=False).returncode != 0
    rex.run("start", "hello")
    rex.run("restart", "hello")
    assert rex.jails()["hello"]["state"] == "running"
    ip = rex.ip_of("hello")
    rex.run("destroy", "hello")
    assert rex.jails() == {}
    assert rex.leftovers() == rex.nothing
    # the address is free again
    rex.run("up", ex / "hello.rex")
    assert rex.ip_of("hello") == ip


def test_cached_steps_rebuild_from_the_changed_one(rex: Rex, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("one\n")
    rexfile = ctx / "app.rex"
    rexfile.write_text(
        f"BASE {rex.base}\n"
        "PROVISION RUN echo step1 > /s1\n"
        "PROVISION COPY a.txt /a.txt\n"
        "PROVISION RUN cat /a.txt > /s3\n"
    )
    first = rex.run("build", rexfile)
    assert first.stderr.count("(cached)") == 0
    again = rex.run("build", rexfile)
    assert again.stderr.count("(cached)") == 3
    assert again.stdout == first.stdout
    (ctx / "a.txt").write_text("two\n")  # step 2's content changes
    third = rex.run("build", rexfile)
    assert "Step 1/3: PROVISION RUN echo step1 > /s1 (cached)" in third.stderr
    assert "Step 2/3: PROVISION COPY a.txt /a.txt (cached)" not in third.stderr
    assert "Step 3/3: PROVISION RUN cat /a.txt > /s3 (cached)" not in third.stderr
    rex.run("up", rexfile)
    assert rex.run("exec", "app", "--", "cat", "/s3").stdout == "two\n"


def test_failing_step_names_itself_and_rolls_back(rex: Rex, tmp_path: Path) -> None:
    rexfile = tmp_path / "bad.rex"
    rexfile.write_text(f"BASE {rex.base}\nPROVISION RUN echo about to fail; exit 3\n")
    done = rex.run("up", rexfile, check=False)
    assert done.returncode == 25
    assert (
        f"{rexfile}:2: PROVISION RUN echo about to fail; exit 3 failed with exit status 3"
        in done.stderr
    )
    assert "about to fail" in done.stderr
    assert rex.jails() == {}
    assert rex.leftovers() == rex.nothing
    images = sh("zfs", "list", "-H", "-o", "name", "-r", f"{rex.dataset}/images").stdout.split()
    assert images == [f"{rex.dataset}/images"]


def test_ls_json_fields(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex", "--name", "web1")
    data = json.loads(rex.run("-o", "json", "ls").stdout)
    assert data[0]["name"] == "web1"
    assert set(data[0]) >= {"name", "state", "ips", "hostname", "services", "base", "host"}
    assert data[0]["host"] == "testhost"


def test_env_and_enable_reach_every_daemon_rc_starts(rex: Rex, tmp_path: Path) -> None:
    """ENV gets to what /etc/rc starts (FreeBSD: exec.start sources the env file,
    exec.clean would drop it; Linux: the init sources the same file), and ENABLE's
    rc.conf.d file makes rc start the service (the Linux test base's /etc/rc
    reads /etc/rc.conf.d as rc.subr does)."""
    ctx = tmp_path / "svc"
    ctx.mkdir()
    (ctx / "probe").write_text(
        "#!/bin/sh\n# an rc.d script: writes what it got\n"
        'echo "$1 GREETING=$GREETING flags=$probe_flags" > /var/run/probe.out\n'
    )
    (ctx / "probe").chmod(0o755)
    rcd = "/usr/local/etc/rc.d" if rex.platform == "freebsd" else "/etc/rc.d"
    rexfile = ctx / "svc.rex"
    # a step runs like pkg(7) needs it without a terminal (usr.sbin/pkg/pkg.c
    # non_interactive_message: ASSUME_ALWAYS_YES), with the host as its resolver
    step = (
        'PROVISION RUN echo "yes=$ASSUME_ALWAYS_YES greeting=$GREETING" > /build.out; '
        "grep nameserver /etc/resolv.conf >> /build.out\n"
    )
    rexfile.write_text(
        f"BASE {rex.base}\nPROVISION COPY probe {rcd}/probe\nENV GREETING=hi there\n"
        f"{step}ENABLE probe FLAGS -x 1\n"
    )
    if rex.platform == "freebsd":
        # rc.subr runs a script with `rcvar`; the probe is plain sh: wrap it
        (ctx / "probe").write_text(
            "#!/bin/sh\n# PROVIDE: probe\n. /etc/rc.subr\nname=probe\nrcvar=probe_enable\n"
            "start_cmd='echo start GREETING=$GREETING flags=$probe_flags > /var/run/probe.out'\n"
            'load_rc_config $name\nrun_rc_command "$1"\n'
        )
    rex.run("up", rexfile)
    out = rex.run("exec", "svc", "--", "cat", "/var/run/probe.out").stdout
    assert out == "start GREETING=hi there flags=-x 1\n"
    built = rex.run("exec", "svc", "--", "cat", "/build.out").stdout.splitlines()
    assert built[0] == "yes=yes greeting=hi there"
    host_address = next(ipaddress.ip_network(rex.env["REX_SUBNET"]).hosts())
    assert built[1].split() == ["nameserver", str(host_address)]
