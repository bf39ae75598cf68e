"""The package metadata and the FreeBSD port agree with the code: the declared
dependencies are exactly what src/ imports, the port's version and
dependencies are pyproject.toml's, and the rc.d script is what rex-agent(8)
documents."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PORT = REPO / "contrib" / "freebsd" / "sysutils" / "rexcarcer"
RC = PORT / "files" / "rexcarcer_agent.in"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# FreeBSD origin of each dependency and its PORTEPOCH suffix
ORIGINS = {
    "aiohttp": ("www/py-aiohttp", ""),
    "click": ("devel/py-click", ""),
    "cryptography": ("security/py-cryptography", ",1"),
    "httpx": ("www/py-httpx", ""),
    "psutil": ("sysutils/py-psutil", ""),
    "rich": ("textproc/py-rich", ""),
}


def _lower_bounds() -> dict[str, str]:
    out = {}
    for req in PYPROJECT["project"]["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", req)
        assert m is not None, f"{req}: every dependency needs a lower bound (>=)"
        out[m.group(1).lower()] = m.group(2)
    return out


def _imported_distributions() -> set[str]:
    modules: set[str] = set()
    for path in (REPO / "src" / "rexcarcer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"rexcarcer"}
    found = packages_distributions()
    return {d.lower() for m in third_party for d in found.get(m, [m])}


def test_dependencies_are_exactly_what_src_imports() -> None:
    assert set(_lower_bounds()) == _imported_distributions()


def _makefile() -> dict[str, str]:
    """``VAR= value`` assignments of the port's Makefile, continuation lines joined."""
    text = (PORT / "Makefile").read_text().replace("\\\n", " ")
    return {m.group(1): " ".join(m.group(2).split())
            for m in re.finditer(r"^([A-Z_]+)=\s*(.*)$", text, re.M)}  # fmt: skip


def test_port_version_and_python_are_pyprojects() -> None:
    make = _makefile()
    assert make["DISTVERSION"] == PYPROJECT["project"]["version"]
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert make["USES"] == f"python:{minimum}+"
    assert set(make["USE_PYTHON"].split()) == {"autoplist", "concurrent", "pep517"}
    assert make["LICENSE"] == "BSD2CLAUSE" and PYPROJECT["project"]["license"]["text"] == (
        "BSD-2-Clause"
    )


def test_port_run_depends_are_pyprojects_dependencies() -> None:
    deps = _makefile()["RUN_DEPENDS"].split()
    python = sorted(d for d in deps if d.startswith("${PYTHON_PKGNAMEPREFIX}"))
    expected = sorted(
        f"${{PYTHON_PKGNAMEPREFIX}}{name}>={bound}{ORIGINS[name][1]}:{ORIGINS[name][0]}@${{PY_FLAVOR}}"
        for name, bound in _lower_bounds().items()
    )
    assert python == expected
    assert "rsyslogd:sysutils/rsyslog8" in deps  # the log collector; unbound is in base
    assert not [d for d in deps if "unbound" in d]


def test_the_rc_script_parses_and_follows_rc_subr_conventions() -> None:
    subprocess.run(["sh", "-n", RC], check=True)
    text = RC.read_text()
    name = RC.name.removesuffix(".in")
    assert _makefile()["USE_RC_SUBR"] == name
    assert f"# PROVIDE: {name}\n" in text and f"\nname={name}\n" in text
    assert f"\nrcvar={name}_enable\n" in text
    require = re.search(r"^# REQUIRE: (.*)$", text, re.M)
    assert require is not None
    assert {"LOGIN", "NETWORKING", "local_unbound", "zfs"} <= set(require.group(1).split())
    assert "# KEYWORD: shutdown\n" in text
    assert "/usr/local" not in text.replace("# ", "")  # %%PREFIX%%, not a fixed path
    assert f"{name}_flags" not in text  # never in command_args (Porter's Handbook)
    assert 'command="/usr/sbin/daemon"' in text and "-P ${pidfile}" in text


def test_rex_agent_8_documents_the_rc_variables() -> None:
    text = RC.read_text()
    documented = set(re.findall(r"^# (rexcarcer_agent_\w+) \(", text, re.M))
    page = (REPO / "src" / "rexcarcer" / "man" / "rex-agent.8").read_text()
    in_page = set(re.findall(r"^\.It Va (rexcarcer_agent_\w+)$", page, re.M))
    assert documented == in_page == {"rexcarcer_agent_enable", "rexcarcer_agent_args",
                                     "rexcarcer_agent_log"}  # fmt: skip
    for var in documented:
        assert text.count("${" + var) + text.count(f"={var}") >= 1, var


def test_pkg_plist_is_what_post_install_writes() -> None:
    """The completion scripts: one per shell `rex completion` knows, written by
    the Makefile's loop, listed in pkg-plist (autoplist lists the wheel's files,
    USE_RC_SUBR the rc.d script, so neither is in pkg-plist)."""
    from rexcarcer.cli.complete import SHELLS

    text = (PORT / "Makefile").read_text().replace("\\\n", " ")
    loop = re.search(r"^\.for shell file in (.*)$", text, re.M)
    assert loop is not None
    words = loop.group(1).split()
    pairs = dict(zip(words[::2], words[1::2], strict=True))
    assert set(pairs) == set(SHELLS)
    plist = (PORT / "pkg-plist").read_text().splitlines()
    assert sorted(plist) == sorted(f"share/{f}" for f in pairs.values())
    assert "PLIST_FILES" not in _makefile()
    assert not [e for e in plist if "rc.d" in e or "site-packages" in e or "/man/" in e]
