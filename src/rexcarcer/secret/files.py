"""One host's secrets: ``$REX_ROOT/secrets/<name>``, the value as given, mode
0600 in a directory of mode 0700, both root's. Outside the state store on
purpose: a store is copied, backed up and, in a cluster, replicated.

Writes go through ``fsutil.atomic_write`` (the mode is set before any byte is
written, and a reader sees the old value or the new one). Reads open the file
with O_NOFOLLOW, so a symbolic link planted in the directory is refused, not
followed.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexcarcer.fsutil import atomic_write
from rexcarcer.names import check_secret_name, secret_name_problem
from rexcarcer.runtime.secretfs import MAX_SECRET
from rexcarcer.secret import SecretError

DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A secret as ``rex secret ls`` shows it: never its value."""

    name: str
    size: int
    updated: int  # seconds since the epoch
    hosts: tuple[str, ...] = field(default=())  # a cluster: the hosts it is sealed for

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "size": self.size, "updated": self.updated}
        if self.hosts:
            out["hosts"] = list(self.hosts)
        return out


def check_value(name: str, value: bytes) -> bytes:
    """Refuse an empty or oversized value (the message gives sizes, not content)."""
    if not value:
        raise SecretError(
            f"the value of secret {name} is empty",
            hint=f"give it on standard input: printf %s VALUE | rex secret set {name}",
        )
    if len(value) > MAX_SECRET:
        raise SecretError(
            f"the value of secret {name} is {len(value)} bytes; the limit is {MAX_SECRET}",
            hint="a secret is a password, key or certificate; put data in a VOLUME",
        )
    return value


def unknown(name: str, where: str = "on this host") -> SecretError:
    return SecretError(
        f"no secret named {name!r} {where}",
        hint=f"set it first: printf %s VALUE | rex secret set {name} (`rex secret ls` lists them)",
    )


class LocalSecrets:
    def __init__(self, root: Path) -> None:
        self.dir = root / "secrets"

    def _ensure_dir(self) -> Path:
        try:
            self.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            st = self.dir.lstat()
            if not stat.S_ISDIR(st.st_mode):
                raise SecretError(
                    f"{self.dir} is not a directory", hint="move it away; rex keeps secrets there"
                )
            if stat.S_IMODE(st.st_mode) != DIR_MODE:
                os.chmod(self.dir, DIR_MODE)
        except OSError as exc:
            raise SecretError(
                f"cannot prepare {self.dir}: {exc.strerror or exc}", hint="rex runs as root"
            ) from exc
        return self.dir

    def set(self, name: str, value: bytes) -> None:
        check_secret_name(name)
        check_value(name, value)
        path = self._ensure_dir() / name
        try:
            atomic_write(path, value, mode=FILE_MODE, owner=(os.geteuid(), os.getegid()))
        except OSError as exc:
            raise SecretError(f"cannot write secret {name}: {exc.strerror or exc}") from exc

    def get(self, name: str) -> bytes:
        if secret_name_problem(name) is not None:
            raise unknown(name)
        try:
            fd = os.open(self.dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise unknown(name) from None
        except OSError as exc:
            raise SecretError(
                f"cannot read secret {name}: {exc.strerror or exc}",
                hint=f"{self.dir} holds one regular file per secret",
            ) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SECRET:
                raise SecretError(
                    f"secret {name} in {self.dir} is not a regular file of at "
                    f"most {MAX_SECRET} bytes",
                    hint=f"set it again: rex secret set {name}",
                )
            return os.read(fd, MAX_SECRET + 1)
        finally:
            os.close(fd)

    def list(self) -> list[SecretInfo]:
        try:
            entries = sorted(os.scandir(self.dir), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SecretError(f"cannot list {self.dir}: {exc.strerror or exc}") from exc
        out = []
        for e in entries:  # dot files are atomic_write's temporary files
            if secret_name_problem(e.name) is None and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                out.append(SecretInfo(e.name, st.st_size, int(st.st_mtime)))
        return out

    def remove(self, name: str) -> bool:
        """Remove the secret; whether it existed."""
        if secret_name_problem(name) is not None:
            return False
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SecretError(f"cannot remove secret {name}: {exc.strerror or exc}") from exc
        return True


def now() -> int:
    return int(time.time())
