"""rex cp and rex console on the real Linux platform; root in the jail plants
symlinks to host paths and rex neither reads nor writes through them."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from tests.integration.conftest import Rex, copy_example


def test_files_in_and_out_and_a_planted_symlink(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret").write_text("host data")
    plant = f"mkdir -p /srv && ln -s {victim} /srv/evil && ln -s {victim}/secret /srv/leak"
    rex.run("exec", "hello", "--", "sh", "-c", plant)
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "css" / "a.css").write_text("h1{}")
    rex.run("cp", site, "hello:/srv/")
    assert rex.run("exec", "hello", "--", "cat", "/srv/site/css/a.css").stdout == "h1{}"
    (tmp_path / "note").write_text("written")
    rex.run("cp", tmp_path / "note", "hello:/srv/evil/")
    assert sorted(os.listdir(victim)) == ["secret"]  # nothing written on the host
    assert rex.run("exec", "hello", "--", "cat", f"{victim}/note").stdout == "written"
    out = tmp_path / "out"
    out.mkdir()
    rex.run("cp", "hello:/srv/leak", out)
    assert (out / "leak").is_symlink() and os.readlink(out / "leak") == f"{victim}/secret"
    rex.run("cp", "hello:/var/www/index.html", out / "page.html")
    assert "hello from" in (out / "page.html").read_text()
    bad = rex.run("cp", "hello:/../../etc/passwd", out, check=False)
    assert bad.returncode == 26 and "outside the jail root" in bad.stderr


def test_console_is_a_login_shell_on_a_terminal(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    # script(1) gives the command a pseudo-terminal; the shell reads the lines we type
    argv = shlex.join(rex.argv("console", "hello"))
    done = subprocess.run(["script", "-qec", argv, "/dev/null"], input="echo $GREETING\nexit 5\n",
                          capture_output=True, text=True, env=rex.env, timeout=60)  # fmt: skip
    assert done.returncode == 5, done.stdout + done.stderr
    assert "hello" in done.stdout
