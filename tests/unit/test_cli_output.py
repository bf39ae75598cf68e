"""Output for people: `rex ls -o wide`, and no colour or cursor control unless
stderr is a terminal and NO_COLOR is unset (checked on a real pseudo-terminal)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from rexcarcer.base.progress import LineTransfer, RichTransfer, transfer_for
from rexcarcer.cli.output import ConsoleProgress, ansi_ok
from tests.unit.fakes import FakeCtx, fake_ctx, rex, web

ESC = b"\x1b["

# A long operation as the CLI reports it: two steps, a build step's output and a
# download (the transfer the host's progress picks: a bar or plain lines).
SCRIPT = """
from rexcarcer.base.progress import transfer_for
from rexcarcer.cli.output import ConsoleProgress
p = ConsoleProgress()
p.step("Step 1/2: PROVISION RUN make")
p.output("compiling")
t = transfer_for(p)
t.start("downloading base.zfs.bz2", 4 << 20)
for _ in range(64):
    t.advance(64 << 10)
t.finish()
p.step("Step 2/2: PROVISION COPY a /a")
print(type(t).__name__)
"""


def run_on_pty(env: dict[str, str]) -> tuple[bytes, str]:
    """SCRIPT with stderr on a pseudo-terminal: what the terminal got, and stdout."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                                stderr=slave, env=env)  # fmt: skip
        os.close(slave)
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 10)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        os.close(master)
    assert proc.returncode == 0, seen.decode(errors="replace")
    return seen, out.strip()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    return env


def test_a_terminal_gets_bold_steps_and_a_transfer_bar() -> None:
    seen, kind = run_on_pty(base_env())
    assert kind == "RichTransfer"
    assert b"\x1b[1m==> Step 1/2: PROVISION RUN make" in seen
    assert b"downloading base.zfs.bz2" in seen and b"4.2 MB" in seen  # rich's bar, in SI units


def test_no_color_on_a_terminal_is_plain_lines() -> None:
    seen, kind = run_on_pty({**base_env(), "NO_COLOR": "1"})
    assert kind == "LineTransfer"
    assert ESC not in seen
    text = seen.decode()
    assert "==> Step 1/2: PROVISION RUN make" in text and "    | compiling" in text
    assert "    | downloading base.zfs.bz2 (4.0 MiB)" in text
    assert "downloading base.zfs.bz2: 4.0 MiB in " in text


def test_a_pipe_gets_plain_lines() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, env=base_env(),
                          check=True)  # fmt: skip
    assert ESC not in done.stderr and done.stdout.decode().strip() == "LineTransfer"
    assert b"==> Step 2/2: PROVISION COPY a /a" in done.stderr


def test_ansi_ok() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as term:
            assert ansi_ok(term, {})
            assert ansi_ok(term, {"NO_COLOR": ""})  # no-color.org: empty means unset
            assert not ansi_ok(term, {"NO_COLOR": "1"})
    finally:
        os.close(master)
        os.close(slave)
    with open(os.devnull, "w") as null:
        assert not ansi_ok(null, {})


def test_json_output_reports_no_progress() -> None:
    quiet = ConsoleProgress(quiet=True)
    assert isinstance(transfer_for(quiet), LineTransfer)
    loud = ConsoleProgress()
    loud.tty = True
    assert isinstance(transfer_for(loud), RichTransfer)


@pytest.fixture
def ctx(tmp_path: Path) -> FakeCtx:
    return fake_ctx(tmp_path)


def test_ls_wide_adds_protocols_image_and_created(ctx: FakeCtx) -> None:
    from click.testing import CliRunner

    from rexcarcer.cli.main import build_cli

    rex(ctx, "up", web(ctx))
    ls = build_cli().commands["ls"]
    ctx.output = "text"
    text = CliRunner().invoke(ls, [], obj=ctx).stdout.splitlines()
    assert text[0].split() == ["NAME", "STATE", "HEALTH", "IP", "HOSTNAME", "SERVICES",
                               "PUBLISHED", "BASE", "HOST"]  # fmt: skip
    assert text[1].split()[5] == "web:80,dns:53"
    ctx.output = "wide"
    wide = CliRunner().invoke(ls, [], obj=ctx).stdout.splitlines()
    assert wide[0].split() == ["NAME", "STATE", "HEALTH", "IP", "HOSTNAME", "SERVICES",
                               "PUBLISHED", "BASE", "IMAGE", "CREATED", "HOST"]  # fmt: skip
    row = wide[1].split()
    assert row[2] == "-" and row[6] == "-"  # no HEALTHCHECK, no PUBLISH
    assert row[5] == "web:80/tcp,dns:53/udp"
    assert row[8].startswith("images/") and row[8].endswith("@img")
    assert row[9].endswith("Z") and row[10] == "h1"
    assert CliRunner().invoke(ls, ["-o", "wide"], obj=ctx).stdout.splitlines() == wide


@pytest.mark.parametrize("args", [["-o", "wide", "ls"], ["ls", "-o", "wide"]])
def test_wide_is_accepted_before_and_after_the_verb(args: list[str]) -> None:
    from click.testing import CliRunner

    from rexcarcer.cli.main import build_cli

    done = CliRunner().invoke(build_cli(), [*args, "--help"])
    assert done.exit_code == 0, done.output
