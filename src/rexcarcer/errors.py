"""The one error tree of RexCarcer.

Every error a user can see is a ``RexError``: a message, an optional hint and a
stable exit code. Foreign exceptions (``OSError``, ``sqlite3.Error``, a failed
process) are translated where they happen, at the driver boundary, with
``raise ... from exc``. Only the CLI prints and exits.

::

    RexError (exit 3)
    ├── UsageError (2)              bad command-line arguments or configuration
    │   └── ConfigError (4)         rexcarcer.toml or REX_* variables
    ├── RexfileError (10)           .rex syntax or validation, with file:line:col
    ├── NotFound (11)               a jail, base or image that does not exist
    ├── Conflict (12)               a name or address already taken, a changed definition
    │   └── Busy (80)               another rex run changed the jail while this one waited
    ├── CommandFailed (20)          an OS command exited non-zero (argv, status, stderr)
    ├── StorageError (21)           ZFS
    │   ├── OutOfSpace (81)         a dataset or its pool is full (names the dataset)
    │   └── ZfsUnresponsive (85)    a zfs command did not finish in time (the daemon is stuck)
    ├── RuntimeBackendError (22)    jail(8) / namespaces
    ├── StateError (23)             the state store
    │   ├── StateDamaged (82)       the state database is unreadable (truncated, corrupt)
    │   ├── RebuildRefused (83)     rex state rebuild: the store already holds jail records
    │   └── RebuildIncomplete (84)  rex state rebuild: some datasets were skipped (named)
    ├── AddressError (24)           IPAM: subnet exhausted, address outside subnet
    ├── BuildError (25)             a PROVISION step failed
    ├── UnsafePath (26)             a path that would escape its root
    ├── NotSupported (27)           a capability this host lacks
    ├── UpdateFailed (45)           an update in place failed and was rolled back
    ├── DependencyError (51)        DEPENDS on itself, on an unknown jail, or a cycle
    ├── AgentRequired (52)          HEALTHCHECK, RESTART, DEPENDS without a host agent
    └── MoveFailed (54)             rex move failed; the jail runs where it was

Feature packages add their own subclasses beside their code: dns (28, unbound
32), pki (29), logs (30), etcd (35, 36), cluster (37, 38, joining 44), bases (40, 41),
firewall (42), limits (43), netpolicy (address 46, hostname 47; published port
refused 75, taken 76, ON address 77, pf hooks missing 78), jail exports and imports
(transfer: 50, 53), DEPENDS (51), the host agent (52), moves (54), secrets (70). A unit
test imports every module and checks that no two classes share a code.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing at run time: the front door's thin client imports this
if TYPE_CHECKING:
    from collections.abc import Sequence


class RexError(Exception):
    """Base of every error RexCarcer reports to a user."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(RexError):
    exit_code = 2


class ConfigError(UsageError):
    exit_code = 4


class RexfileError(RexError):
    """A ``.rex`` file is malformed or invalid; carries its position."""

    exit_code = 10

    def __init__(
        self,
        message: str,
        *,
        file: str = "<input>",
        line: int = 1,
        col: int = 1,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{file}:{line}:{col}: {message}", hint=hint)
        self.reason = message
        self.file = file
        self.line = line
        self.col = col


class NotFound(RexError):
    exit_code = 11


class Conflict(RexError):
    exit_code = 12


class Busy(Conflict):
    """Another rex run held the jail and changed it while this one waited (exit 80):
    its result stands; this run did nothing."""

    exit_code = 80


class CommandFailed(RexError):
    """An OS command exited with a non-zero status."""

    exit_code = 20

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stderr: str = "",
        *,
        hint: str | None = None,
        timed_out: bool = False,
    ) -> None:
        import shlex

        self.argv = list(argv)
        self.returncode = returncode
        self.timed_out = timed_out  # killed by the runner after its timeout
        self.stderr = stderr.strip()
        lines = self.stderr.splitlines()
        # zfs(8) follows some errors with its whole usage text: keep the start
        short = "\n".join(lines[:6]) + ("\n..." if len(lines) > 6 else "")
        detail = f": {short}" if short else ""
        super().__init__(
            f"command failed with exit status {returncode}: {shlex.join(self.argv)}{detail}",
            hint=hint,
        )


class StorageError(RexError):
    exit_code = 21


class OutOfSpace(StorageError):
    """A write ran out of space in a dataset (its quota) or its pool (exit 81)."""

    exit_code = 81


class ZfsUnresponsive(StorageError):
    """A zfs(8) or zpool(8) command did not finish within the ZFS timeout
    (``zfs_timeout``): the daemon or module does not answer (exit 85). The
    command was killed; the step that ran it changed nothing."""

    exit_code = 85


class RuntimeBackendError(RexError):
    exit_code = 22


class StateError(RexError):
    exit_code = 23


class StateDamaged(StateError):
    """The state database cannot be read: truncated or corrupt (exit 82)."""

    exit_code = 82


class RebuildRefused(StateError):
    """``rex state rebuild`` without ``--force`` on a store that holds jail
    records (exit 83): nothing was changed."""

    exit_code = 83


class RebuildIncomplete(StateError):
    """``rex state rebuild`` put back what it could, but skipped datasets whose
    properties are missing or malformed (exit 84); the message names them."""

    exit_code = 84


class AddressError(RexError):
    exit_code = 24


class BuildError(RexError):
    exit_code = 25


class UnsafePath(RexError):
    exit_code = 26


class NotSupported(RexError):
    exit_code = 27


class UpdateFailed(RexError):
    """An update in place did not start; the previous generation runs again (exit 45)."""

    exit_code = 45


class DependencyError(RexError):
    """``DEPENDS`` names the jail itself or an unknown jail, or closes a cycle; or a
    jail others depend on is to be destroyed."""

    exit_code = 51


class AgentRequired(RexError):
    """The definition needs the host agent (health checks, restarts, start order)
    and none runs on the host."""

    exit_code = 52


class MoveFailed(RexError):
    """``rex move`` failed before the jail started on the other host: it runs (or
    stays stopped, as it was) where it was, and the other host keeps nothing
    (exit 54)."""

    exit_code = 54


def all_error_classes() -> list[type[RexError]]:
    """Every class of the tree, for the documented table and the uniqueness test."""
    seen: list[type[RexError]] = []
    stack: list[type[RexError]] = [RexError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
