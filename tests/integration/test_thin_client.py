"""`rex ls`, `rex up FILE`, `rex plan FILE` and `rex destroy NAME...` through
the front door's thin client (cli/thin.py) print and exit exactly as the click commands do, against
a real agent on the real Linux platform; the thin client loads neither click
nor the .rex parser (Python's -X importtime lists what a process imported)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Rex, copy_example
from tests.integration.test_service_doors import running_agent

pytestmark = pytest.mark.integration

CLICK = "import sys; sys.argv[0] = 'rex'; from rexcarcer.cli.main import main; main()"
PLAIN = "BASE busybox\nPROVISION RUN echo built > /built\nSERVICE s PORT 1\n"


def door(rex: Rex, thin: bool, *args: str | Path) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `rex ARGS` through one door, with the
    elapsed times and creation time (which differ from run to run) masked."""
    argv = rex.argv(*args)
    if not thin:
        at = argv.index("rexcarcer")
        argv[at - 1 : at + 1] = ["-c", CLICK]
    done = subprocess.run(argv, capture_output=True, text=True, env=rex.env, timeout=300)
    mask = [(r"^\[ *[0-9.]+s\] ", "[T] "), (r'"created": [0-9]+', '"created": C'),
            (r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z", "WHEN"),
            (r'"(memory|memory_failcnt|oom_kills|pids|cpu_ns)": [0-9]+', r'"\1": N')]  # fmt: skip
    out, err = done.stdout, done.stderr
    for pattern, repl in mask:
        out, err = re.sub(pattern, repl, out, flags=re.M), re.sub(pattern, repl, err, flags=re.M)
    return done.returncode, out, err


def imports_click(rex: Rex, *args: str | Path) -> bool:
    argv = rex.argv(*args)
    argv[argv.index(sys.executable) + 1 : argv.index(sys.executable) + 1] = ["-X", "importtime"]
    done = subprocess.run(argv, capture_output=True, text=True, env=rex.env, timeout=300)
    return bool(re.search(r"\| +(click|rexcarcer\.rexfile\.parser)$", done.stderr, re.M))


def test_the_thin_client_and_click_say_the_same(rex: Rex, tmp_path: Path) -> None:
    app = tmp_path / "app.rex"
    app.write_text(PLAIN)
    bad = tmp_path / "bad.rex"
    bad.write_text("BASE busybox\nPROVISION FROB x\n")
    vol = tmp_path / "vol.rex"
    vol.write_text("BASE busybox\nVOLUME data /srv/data\n")
    rex.run("build", app)
    with running_agent(rex, tmp_path) as log:
        assert not imports_click(rex, "ls")
        for thin in (True, False):
            got = {
                "up-json": door(rex, thin, "-o", "json", "up", app),
                "up-again": door(rex, thin, "up", app),  # nothing to do: the summary
                "plan": door(rex, thin, "plan", app, "--name", "app"),
                "plan-json": door(rex, thin, "plan", app, "-o", "json"),
                "ls": door(rex, thin, "ls"),
                "ls-wide": door(rex, thin, "ls", "-o", "wide"),
                "ls-json": door(rex, thin, "-o", "json", "ls"),
                "bad-file": door(rex, thin, "up", bad),
                "bad-name": door(rex, thin, "up", app, "--name", "Bad_Name"),
                "no-host": door(rex, thin, "plan", app, "--host", "elsewhere"),
            }
            rex.run("up", vol)
            got["destroy"] = door(rex, thin, "destroy", "app", "vol")  # vol's volume kept
            got["destroy-missing"] = door(rex, thin, "destroy", "nosuch")
            rex.run("up", vol)  # its kept volume attached again
            got["destroy-volumes"] = door(rex, thin, "destroy", "--volumes", "vol")
            if thin:
                first = got
        served = log.read_text()
    assert first == got
    assert first["destroy"][0] == 0 and "==> Destroying app" in first["destroy"][2]
    assert "kept the volumes of vol: vol.data" in first["destroy"][2]
    assert (
        first["destroy-missing"][0] == 11
        and "no jail named 'nosuch'" in first["destroy-missing"][2]
    )
    assert first["destroy-volumes"][0] == 0 and "kept" not in first["destroy-volumes"][2]
    assert "vol" not in rex.run("-o", "json", "volume", "ls").stdout
    assert served.count("agent: destroy vol") == 4
    assert first["up-json"][0] == 0 and '"name": "app"' in first["up-json"][1]
    assert first["up-again"][1].startswith("app is running: 203.0.113.")
    assert first["bad-file"][0] == 10 and "bad.rex:2:" in first["bad-file"][2]
    assert str(tmp_path) not in first["bad-file"][2].replace(str(bad), "")  # not the agent's copy
    assert first["bad-name"][0] != 0 and "Bad_Name" in first["bad-name"][2]
    assert served.count("agent: up app") == 4  # both doors went to the agent


def test_copy_sources_travel_with_the_request(rex: Rex, tmp_path: Path) -> None:
    """A file with COPY steps: the agent asks for its context, the click path
    sends it, and the jail has the file (examples/hello)."""
    app = copy_example(tmp_path) / "hello.rex"
    with running_agent(rex, tmp_path) as log:
        code, out, err = door(rex, True, "up", app, "--name", "hello")
        assert code == 0, err
        assert out.startswith("hello is running: ")
        page = rex.run("exec", "hello", "--", "cat", "/var/www/index.html").stdout
        rex.run("destroy", "hello")
        served = log.read_text()
    assert page == (app.parent / "index.html").read_text()
    assert served.count("agent: up hello for uid 0") == 2  # asked, then with the sources
