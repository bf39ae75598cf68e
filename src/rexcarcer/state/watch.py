"""A prefix watch read straight from the gateway's streaming ``/v3/watch``.

The watch first reads the prefix (a ``reset`` update with every entry and the
revision R of that read), then streams changes from R+1. When the stream
breaks or goes quiet for ``idle`` seconds, it is opened again from the last
revision seen + 1, on whichever endpoint answers, so no change is lost or
repeated. When that revision was compacted meanwhile, etcd cancels the watch
with ``compact_revision`` (etcd3gw hangs there, etcd#8668): the watch reads the
whole prefix again and hands out a new ``reset``. While etcd is unreachable it
hands out ``idle`` updates, so the consumer keeps serving what it has.

A store restored from a snapshot (``etcdctl snapshot restore``) starts again at
the snapshot's revision, below the last one this watch saw: a watch opened
from there would wait, silently, for revisions the restored store has not
reached, while the view keeps keys the restore took back. Every watch
response's header carries the store's revision; one below ours makes the watch
read the prefix again, and when that read is below ours too the ``reset`` says
``restored`` (a member that is merely behind answers the read at the current
revision, so it gives an ordinary ``reset``). A restore needs etcd stopped, so
a watch that lost its stream reads the prefix again before it watches on: a
store restored meanwhile and written past our revision since would otherwise
go unnoticed, its writes up to our revision skipped. That read is checked
against the revision each key had when the watch last saw it: a key modified
at or before our revision that the watch saw otherwise (or not at all) comes
from another history, and the ``reset`` says ``restored`` too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from rexcarcer.errors import StateError
from rexcarcer.state.base import Entry
from rexcarcer.state.gateway import (
    Gateway,
    StreamIdle,
    Transient,
    as_int,
    b64,
    prefix_end,
    unb64,
)


class Watched(Protocol):
    """What a watch reads through: the store's gateway, its key prefix, a snapshot
    (state/etcd.py ``EtcdStore``)."""

    prefix: str
    gateway: Gateway

    def snapshot(self, prefix: str) -> tuple[list[Entry], int]: ...


log = logging.getLogger("rexcarcer.etcd")


class Kind(StrEnum):
    RESET = "reset"  # ``entries`` is the whole prefix: replace the view
    CHANGES = "changes"  # ``events`` in revision order
    IDLE = "idle"  # nothing happened (or etcd is unreachable): do periodic work


@dataclass(frozen=True, slots=True)
class Event:
    key: str
    value: str | None  # None: deleted
    revision: int


@dataclass(frozen=True, slots=True)
class Update:
    kind: Kind
    revision: int
    entries: tuple[Entry, ...] = ()
    events: tuple[Event, ...] = ()
    # a RESET whose revision is below the last one seen: the store was restored
    restored: bool = False


def apply(view: dict[str, Entry], update: Update) -> bool:
    """Fold ``update`` into ``view`` (key -> entry); whether anything changed."""
    if update.kind is Kind.RESET:
        fresh = {e.key: e for e in update.entries}
        changed = fresh != view
        view.clear()
        view.update(fresh)
        return changed
    for ev in update.events:
        if ev.value is None:
            view.pop(ev.key, None)
        else:
            view[ev.key] = Entry(ev.key, ev.value, ev.revision)
    return bool(update.events)


class Compacted(Exception):
    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted up to {revision}")
        self.revision = revision


class WentBack(Exception):
    def __init__(self, revision: int, seen: int) -> None:
        super().__init__(f"the store is at revision {revision}, below {seen} seen before")


class Watch:
    def __init__(self, store: Watched, prefix: str, *, idle: float = 5.0) -> None:
        self.store = store
        self.prefix = prefix
        self.idle = idle
        self.revision = 0  # last revision folded into the consumer's view
        self.resets = 0  # full reads after the first (compactions), for tests and logs
        self.seen: dict[str, int] = {}  # key -> the revision that last modified it, as seen

    def updates(self, stop: threading.Event) -> Iterator[Update]:
        """Updates until ``stop`` is set (checked at least every ``idle`` seconds)."""
        backoff = 0.2
        reset_needed = True
        while not stop.is_set():
            try:
                if reset_needed:
                    yield self._reset()
                    reset_needed = False
                yield from self._stream(stop)
                backoff = 0.2
            except (Compacted, WentBack) as exc:
                log.warning("etcd watch on %s: %s; reading it again", self.prefix, exc)
                self.resets += 1
                reset_needed = True
            except (StateError, Transient, OSError) as exc:
                log.warning("etcd watch on %s: %s; retrying in %.1f s", self.prefix, exc, backoff)
                # what happened meanwhile is read whole: a store restored while
                # this watch was away may already be past its revision
                reset_needed = True
                yield Update(Kind.IDLE, self.revision)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.idle)
            except StreamIdle:
                yield Update(Kind.IDLE, self.revision)

    def _reset(self) -> Update:
        entries, revision = self.store.snapshot(self.prefix)
        # A key last modified at or before the revision this watch had seen must
        # be what the watch saw of it then (the history is linear); one that is
        # not comes from another history: a restore the store has since written
        # past. A store still below that revision went back outright.
        diverged = self.revision > 0 and any(
            e.revision <= self.revision and self.seen.get(e.key) != e.revision for e in entries
        )
        restored = 0 < revision < self.revision or diverged
        if restored:
            log.warning("etcd on %s went back from revision %d (now at %d): restored from a "
                        "snapshot", self.prefix, self.revision, revision)  # fmt: skip
        self.revision = revision
        self.seen = {e.key: e.revision for e in entries}
        return Update(Kind.RESET, revision, entries=tuple(entries), restored=restored)

    def _body(self) -> dict[str, Any]:
        full = self.store.prefix + self.prefix
        return {
            "create_request": {
                "key": b64(full),
                "range_end": prefix_end(full),
                "start_revision": str(self.revision + 1),
            }
        }

    def _stream(self, stop: threading.Event) -> Iterator[Update]:
        with self.store.gateway.stream("watch", self._body(), idle=self.idle) as messages:
            for msg in messages:
                head = as_int(msg.get("header", {}).get("revision"))
                if 0 < head < self.revision:
                    raise WentBack(head, self.revision)
                if msg.get("canceled"):
                    compact = as_int(msg.get("compact_revision"))
                    if compact:
                        raise Compacted(compact)
                    raise Transient(str(msg.get("cancel_reason") or "watch canceled"), safe=True)
                events = tuple(self._event(ev) for ev in msg.get("events", []))
                for ev in events:
                    if ev.value is None:
                        self.seen.pop(ev.key, None)
                    else:
                        self.seen[ev.key] = ev.revision
                if events:
                    self.revision = max(self.revision, events[-1].revision)
                    yield Update(Kind.CHANGES, self.revision, events=events)
                if stop.is_set():
                    return

    def _event(self, ev: dict[str, Any]) -> Event:
        kv = ev.get("kv", {})
        key = unb64(kv.get("key"))[len(self.store.prefix) :]
        revision = as_int(kv.get("mod_revision"))
        if ev.get("type") == "DELETE":
            return Event(key, None, revision)
        return Event(key, unb64(kv.get("value")), revision)


def wait_for(
    store: Watched, prefix: str, predicate: Any, *, timeout: float = 10.0
) -> dict[str, Entry]:
    """Watch ``prefix`` until ``predicate(view)`` holds; the view (tests, benches)."""
    stop = threading.Event()
    view: dict[str, Entry] = {}
    deadline = time.monotonic() + timeout
    for update in Watch(store, prefix, idle=min(1.0, timeout)).updates(stop):
        apply(view, update)
        if predicate(view):
            return view
        if time.monotonic() > deadline:
            break
    raise StateError(f"timed out after {timeout} s waiting on {prefix}")
