"""The agent keeps this host's certificates from expiring.

In the last third of their validity (or when the host's address, subnet or
CA changed) the host certificate and the jail CA are renewed: signed here on a
host that holds the cluster CA, else by a renewal request to the CA host
(enroll.py), sent without waiting and picked up at a later pass. A refused or
unanswered request is retried after ``RETRY`` seconds. After a renewal
``reload`` lets the API serve the new certificate.

Each pass also re-signs this host's jail CRL when the one published in the
store is older than a day (a CRL is good for a week, crl.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from rexcarcer.cluster import enroll, model, tls
from rexcarcer.config import Config
from rexcarcer.errors import RexError
from rexcarcer.model import keys
from rexcarcer.pki.layout import CaPaths, JailCaPaths
from rexcarcer.state.base import Store

log = logging.getLogger("rexcarcer.agent")

RETRY = 300.0
ANSWER_WAIT = 600.0  # an unanswered request is withdrawn and sent again after this
CRL_REFRESH = 86400.0


@dataclass
class Renewal:
    store: Store
    config: Config
    reload: Callable[[], None] | None = None
    refresh_crl: Callable[[], None] | None = None
    lock: Callable[[], AbstractContextManager[None]] = nullcontext  # the host's "ca" lock
    pending: enroll.Pending | None = None
    sent: float = 0.0
    next_try: float = 0.0

    def sync(self, view: model.View) -> None:
        rec = model.host_records(view).get(self.config.host)
        subnet = model.subnet_of(view, self.config.host)
        if rec is None or subnet is None or not rec.get("address"):
            return  # not (or no longer) a member
        self._crl(view)
        address = str(rec["address"])
        if CaPaths.under(self.config.root).exists():
            with self.lock():  # `rex up` may be making the jail CA too
                done = enroll.issue_here(self.store, self.config, address=address, subnet=subnet)
            if done is not None:
                log.info("certificates: renewed here (host certificate %s)", done.host_serial)
                self._reloaded()
            return
        if self.pending is not None:
            self._collect(view)
        elif time.time() >= self.next_try and self._due(address, subnet):
            try:
                self.pending = enroll.start_renew(self.store, self.config, host=self.config.host,
                                                  address=address)  # fmt: skip
                self.sent = time.time()
                log.info("certificates: due; asked %s to renew them (request %s)",
                         self.pending.ca_host, self.pending.rid)  # fmt: skip
            except RexError as exc:
                self.next_try = time.time() + RETRY
                log.warning("certificates: cannot ask for a renewal: %s", exc)

    def _due(self, address: str, subnet: model.Network) -> bool:
        from rexcarcer.pki import jailca

        files, jpaths = tls.TlsFiles.under(self.config.root), JailCaPaths.under(self.config.root)
        if not files.present() or not jpaths.exists():
            return False  # never joined with a token: nothing to renew
        now = dt.datetime.now(dt.UTC)
        moved = files.settings().get("address") != address
        return (
            moved
            or tls.due(files)
            or jailca.problem(jpaths, subnet, None, now) is not None
            or (jailca.is_due(jpaths, now))
        )

    def _collect(self, view: model.View) -> None:
        pending = self.pending
        assert pending is not None
        entry = view.get(enroll.answer_key(pending.rid))
        if entry is None:
            if time.time() - self.sent > ANSWER_WAIT:
                log.warning("certificates: %s did not answer; asking again later", pending.ca_host)
                enroll.forget(self.store, pending)
                self.pending, self.next_try = None, time.time() + RETRY
            return
        self.pending = None
        try:
            done = enroll.finish(self.store, self.config, pending, model.record(entry))
        except RexError as exc:
            self.next_try = time.time() + RETRY
            log.warning("certificates: renewal failed: %s (%s)", exc, exc.hint or "")
            return
        log.info("certificates: renewed by %s (host certificate %s)", pending.ca_host,
                 done.host_serial)  # fmt: skip
        self._reloaded()

    def _reloaded(self) -> None:
        if self.reload is not None:
            self.reload()

    def _crl(self, view: model.View) -> None:
        if self.refresh_crl is None or not JailCaPaths.under(self.config.root).exists():
            return
        entry = view.get(keys.PKI_CRLS + self.config.host)
        updated = float(model.record(entry).get("updated", 0)) if entry is not None else 0.0
        if time.time() - updated >= CRL_REFRESH:
            self.refresh_crl()
