"""What the cluster agent does when etcd was restored from a snapshot (the
watch's ``reset`` says ``restored``, state/watch.py): make the store agree
with the jails this host has.

- A jail of this host that the restore took back (created after the snapshot)
  still exists here: its keys, as this agent last saw them before the restore
  (the record, kept generations, address claim, DNS records, HOSTNAME claim,
  health, certificate), are put back, each only if absent, in one transaction:
  when another jail claimed its address or name since the restore, nothing is
  put and the conflict is logged.
- A jail of this host whose record the restore brought back (destroyed after
  the snapshot) does not exist here: its record, address, DNS names and kept
  generations are removed (engine/jails.py ``prune``).

An agent restarted after the restore has no view from before it and cannot
put records back: docs/faults.md says what the administrator does then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import RexError
from rexcarcer.model import keys
from rexcarcer.model.jail import Status
from rexcarcer.state.base import Compare, Entry, Put, Store
from rexcarcer.state.records import jails_of

log = logging.getLogger("rexcarcer.agent")

# keys named after the jail, and keys whose JSON value names it as "jail"
_NAMED = (keys.JAILS, keys.DNS, keys.HEALTH, keys.PKI_CERTS)
_CLAIMS = (keys.IPAM, keys.NAMES)


def keys_of(view: Mapping[str, Entry], name: str) -> dict[str, Entry]:
    """Every key of jail ``name`` in ``view``."""
    named = {prefix + name for prefix in _NAMED}
    history = f"{keys.HISTORY}{name}/"

    def mine(key: str, entry: Entry) -> bool:
        if key in named or key.startswith(history):
            return True
        return key.startswith(_CLAIMS) and _claimed_by(entry) == name

    return {k: e for k, e in view.items() if mine(k, e)}


def _claimed_by(entry: Entry) -> str | None:
    try:
        value = json.loads(entry.value)
    except ValueError:
        return None
    return str(value.get("jail")) if isinstance(value, dict) else None


def republish(
    eng: Engine, store: Store, before: Mapping[str, Entry], now: Mapping[str, Entry], me: str
) -> list[str]:
    """Put back the keys of this host's jails that exist here and that the
    restore removed; the jails put back."""
    done = []
    for rec in jails_of(before.values()):
        if rec.host != me or rec.key in now or rec.status is not Status.READY:
            continue
        if jails.exists_here(eng, rec.name) is not True:
            continue
        theirs = keys_of(before, rec.name)
        taken = [k for k in theirs if k in now and k.startswith(_CLAIMS)
                 and _claimed_by(now[k]) != rec.name]  # fmt: skip
        lost = {k: e for k, e in theirs.items() if k not in now}
        ok = not taken and store.commit([Compare(k, None) for k in lost],
                                        [Put(k, e.value) for k, e in lost.items()])  # fmt: skip
        if ok:
            log.warning("restore: %s exists here but not in the restored store: put back "
                        "%d keys (%s)", rec.name, len(lost), ", ".join(sorted(lost)))  # fmt: skip
            done.append(rec.name)
        else:
            log.error("restore: %s exists here but its keys could not be put back: another "
                      "jail took its address or name since the restore; `rex destroy %s` and "
                      "`rex up` it again", rec.name, rec.name)  # fmt: skip
    return done


def prune_all(eng: Engine, now: Mapping[str, Entry], me: str) -> list[str]:
    """Remove the records of this host's jails that do not exist here."""
    done = []
    for rec in jails_of(now.values()):
        if rec.host != me or rec.status is not Status.READY:
            continue
        try:
            if jails.prune(eng, rec.name):
                log.warning("restore: %s is in the restored store but not on this host: "
                            "its record, address and DNS names removed", rec.name)  # fmt: skip
                done.append(rec.name)
        except RexError as exc:
            log.warning("restore: cannot check %s yet: %s", rec.name, exc)
    return done
