"""The front door's thin client: ``rex ls``, ``rex up FILE``, ``rex plan
FILE`` and ``rex destroy NAME...`` sent to this host's agent without loading
click, the configuration, the model or the ``.rex`` parser in this process.

The agent keeps all of those loaded (agent/local.py); what this process pays
is Python's start and the C halves of ``socket`` and ``json``
(service/jsonc.py). It takes only the plain forms (``-o``/``--output``,
``--name``, ``--host``; destroy's ``--volumes``); anything else, no agent on
the socket, a configuration this module cannot resolve without config.py, or
a ``.rex`` file that is not a regular file goes to cli/main.py, which answers
as it always did. The agent parses the file under the name the user gave it,
so an error reads as the client's own parse would; a file with COPY steps is
answered with ``need`` and goes to cli/main.py, which sends its sources.

Both paths print through cli/render.py and cli/output.py; the integration test
(tests/integration/test_thin_client.py) runs each command both ways against
a real agent and compares what they print and their exit status.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing imports re; mypy knows this name
if TYPE_CHECKING:
    from typing import Any, NoReturn

VERBS = ("ls", "up", "plan", "destroy")
OUTPUTS = ("text", "json", "wide")  # cli/main.py OUTPUTS
MAX_REXFILE = 1024 * 1024  # rexfile/parser.py MAX_FILE (a unit test keeps them equal)
SUN_PATH_MAX = 103  # service/socket.py


class Request:
    """One plain ``rex ls|up|plan|destroy`` command line (``names``: destroy's)."""

    def __init__(self, verb: str, output: str, file: str | None, options: dict[str, str],
                 names: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.verb, self.output, self.file, self.options = verb, output, file, options
        self.names = names


def _destroy_request(rest: list[str]) -> Request | None:
    """``rex destroy NAME... [--volumes]``: names that are not options, the flag
    at most once (click takes a repeated flag; this leaves it to click)."""
    names = tuple(a for a in rest if a != "--volumes")
    if not names or len(rest) - len(names) > 1 or any(n.startswith("-") for n in names):
        return None
    return Request("destroy", "text", None, {"volumes": "1"} if "--volumes" in rest else {}, names)


def parse(argv: list[str]) -> Request | None:
    """The request ``argv`` makes, when it is one of the plain forms: an
    optional ``-o X`` before the verb, then the verb's own arguments in any
    order. None for anything else (help, other options, a repeated option)."""
    output: str | None = None
    rest = list(argv)
    if len(rest) >= 2 and rest[0] in ("-o", "--output"):
        output, rest = rest[1], rest[2:]
    elif rest and rest[0].startswith("--output="):
        output, rest = rest[0].partition("=")[2], rest[1:]
    if not rest or rest[0] not in VERBS:
        return None
    verb, rest = rest[0], rest[1:]
    if verb == "destroy":  # prints no data: no -o
        return None if output is not None else _destroy_request(rest)
    names = {"-o": "output", "--output": "output"}
    if verb != "ls":
        names.update({"--name": "name", "--host": "host"})
    options: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        key, eq, value = token.partition("=")
        if token.startswith("-"):
            if key not in names or (eq and key == "-o"):
                return None
            if not eq:
                if i + 1 >= len(rest):
                    return None
                value = rest[i + 1]
                i += 1
            if not value or value.startswith("-") or names[key] in options:
                return None
            options[names[key]] = value
        else:
            positional.append(token)
        i += 1
    if "output" in options:
        if output is not None:
            return None
        output = options.pop("output")
    output = output or "text"
    if output not in OUTPUTS or len(positional) != (0 if verb == "ls" else 1):
        return None
    return Request(verb, output, positional[0] if positional else None, options)


def settings(environ: dict[str, str] | None = None) -> tuple[str, str, bool] | None:
    """(state directory, agent socket, in a cluster) as config.py resolves them:
    the environment beats the TOML file, the file beats the defaults. When a
    file exists config.py reads it; None when it cannot (cli/main.py then says
    what is wrong)."""
    env = os.environ if environ is None else environ
    from rexcarcer.platform.defaults import DEFAULTS, this_os

    defaults = DEFAULTS[this_os()]
    given = env.get("REX_ROOT")
    if given == "":
        return None
    hint = given if given is not None else defaults["root"]
    for candidate in (os.path.join(hint, "rexcarcer.toml"), defaults["config_file"]):
        try:
            found = os.path.isfile(candidate)
        except OSError:
            found = False
        if found:
            return _from_config(env)
    root = os.path.abspath(given or defaults["root"])
    sock = env.get("REX_AGENT_SOCKET") or os.path.join(root, "run", "agent.sock")
    cluster = any(env.get("REX_ETCD", "").split(","))
    return root, os.path.join(os.getcwd(), sock), cluster


def _from_config(env: dict[str, str] | os._Environ[str]) -> tuple[str, str, bool] | None:
    from rexcarcer.config import load_config
    from rexcarcer.errors import RexError

    try:
        config = load_config(environ=env)
    except RexError:
        return None
    return str(config.root), str(config.agent_socket), bool(config.etcd)


def pathstr(path: str) -> str:
    """``str(pathlib.PurePosixPath(path))`` without importing pathlib: how the
    click path names the file in its messages (repeated and trailing slashes
    and ``.`` components dropped; two leading slashes kept, POSIX's
    implementation-defined root)."""
    if not path:
        return "."
    lead = "//" if path.startswith("//") and not path.startswith("///") else (
        "/" if path.startswith("/") else "")  # fmt: skip
    parts = [p for p in path.split("/") if p and p != "."]
    return lead + "/".join(parts) if parts or lead else "."


def main(argv: list[str]) -> None:
    """Answer ``argv`` through the agent and exit, or return (cli/main.py answers)."""
    req = parse(argv)
    if req is None:
        return
    found = settings()
    if found is None:
        return
    _root, sock_path, cluster = found
    if req.verb == "destroy":
        _destroy(req, sock_path)
        return
    request: dict[str, Any] = {"op": req.verb, "args": {}}
    body = b""
    if req.file is not None:
        read = _read_rexfile(req.file)
        if read is None:
            return
        shown = pathstr(req.file)
        request["args"] = {
            "file": shown.rpartition("/")[2], "origin": shown, "text": True,
            "name": req.options.get("name"), "on_host": req.options.get("host"),
        }  # fmt: skip
        body = read
    sock = _connect(sock_path)
    if sock is None:
        return
    _answer(req, sock, sock_path, request, body, cluster)


def _read_rexfile(file: str) -> bytes | None:
    """The file's bytes, when it is a regular file of at most MAX_REXFILE bytes
    this process can read (else cli/main.py reports what is wrong with it)."""
    import stat

    try:
        with open(file, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(MAX_REXFILE + 1)
    except OSError:
        return None
    return data if len(data) <= MAX_REXFILE else None


def _connect(path: str) -> Any:
    # socket.py's C half: socket.py imports enum and selectors, which cost more
    # than the rest of this client's imports
    import _socket

    if len(os.fsencode(path)) > SUN_PATH_MAX:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # no agent, or not ours to use: cli/main.py says which
        sock.close()
        return None
    return sock


def _answer(req: Request, sock: Any, sock_path: str, request: dict[str, Any], body: bytes,
            cluster: bool) -> None:  # fmt: skip
    from rexcarcer.cli.output import ConsoleProgress
    from rexcarcer.service import wire

    _on_sigterm()
    try:
        result = _exchange(sock, sock_path, request, body,
                           ConsoleProgress(quiet=req.output == "json"))  # fmt: skip
    except wire.ContextNeeded:
        return  # COPY sources to send: cli/main.py packs them
    lines = _render(req, result, cluster)
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    sys.exit(0)


def _destroy(req: Request, sock_path: str) -> None:
    """Each jail in turn, one request each, as cli/gen_cmds.py ``destroy`` does
    through the agent: its progress, what volumes it kept (on standard error),
    the first error ends it. Returns (cli/main.py answers) only when no agent
    answers the first request."""
    from rexcarcer.cli.output import ConsoleProgress

    _on_sigterm()
    progress = ConsoleProgress(quiet=False)
    volumes = "volumes" in req.options
    for i, name in enumerate(req.names):
        sock = _connect(sock_path)
        if sock is None:
            if i == 0:
                return
            _gone(sock_path, "no longer answers")
        request = {"op": "destroy", "args": {"name": name, "volumes": volumes}}
        kept = _exchange(sock, sock_path, request, b"", progress)
        if kept:
            refs = ", ".join(f"{name}.{v}" for v in kept)
            sys.stderr.write(f"kept the volumes of {name}: {refs} (`rex volume rm` removes them; "
                             f"`rex destroy --volumes` would have)\n")  # fmt: skip
    sys.exit(0)


def _on_sigterm() -> None:
    import _signal  # type: ignore[import-not-found]  # signal.py imports enum

    _signal.signal(_signal.SIGTERM, lambda *_: sys.exit(143))  # as cli/main.py


def _exchange(sock: Any, sock_path: str, request: dict[str, Any], body: bytes,
              progress: Any) -> Any:  # fmt: skip
    """The agent's result; its error, or none, ends this process as cli/main.py
    would (wire.ContextNeeded goes to the caller)."""
    from rexcarcer.errors import RexError
    from rexcarcer.service import wire

    try:
        try:
            return wire.exchange(sock, request, body, progress, where=f"the agent at {sock_path}")
        finally:
            sock.close()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except (OSError, ValueError) as exc:  # the agent went away, or spoke nonsense
        _gone(sock_path, f"ended the request without an answer ({exc})")
    except RexError as exc:
        _fail(exc)


def _gone(sock_path: str, what: str) -> NoReturn:
    from rexcarcer.errors import UsageError
    from rexcarcer.service import wire

    _fail(wire.AgentError(f"the agent at {sock_path} {what}", hint="see the agent's log",
                          exit_code=UsageError.exit_code))  # fmt: skip


def _fail(exc: Any) -> NoReturn:
    """Exit as cli/main.py does on a RexError."""
    sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
    sys.exit(exc.exit_code)


def _render(req: Request, result: Any, cluster: bool) -> list[str]:
    """The lines the click command prints (cli/jail_cmds.py, through render.py)."""
    if req.output == "json":
        import json

        return [json.dumps(result, indent=2, sort_keys=True)]
    from rexcarcer.cli import render

    if req.verb == "ls":
        return [render.ls_table(result, wide=req.output == "wide")]
    if req.verb == "up":
        return [render.up_summary(result, cluster=cluster)]
    return render.plan_lines(result)
