"""Applying hub feed pages to the edge's cache: check items, keep each key's last change,
write the page in one store transaction, run erasures on the worker.

A page that brings members this edge did not hold writes ``members_changed_file`` (if set,
``mqtt.members_changed_file``) after it committed: the root path unit rebuilds the broker's
password file on it, so their apps can log in within seconds (the edge itself stays
unprivileged: it neither writes the password file nor signals the broker).

Malformed items are skipped and counted (one bad record at the hub must not stop a store's
feed). Erasures, and profile tombstones with reason "erased", go through ``forget`` (on the
event worker) BEFORE the page and its cursor commit: a crash in between re-reads the page and
forgets again, which is harmless; the opposite order could lose an erasure.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.store import EdgeStore
from edge.store_sync import SyncReader
from edge.sync_items import (
    BadItem,
    CatalogUpsert,
    OfferUpsert,
    ProfileUpsert,
    Removal,
    catalog_change,
    erasure_item,
    offer_change,
    profile_change,
)
from edge.sync_metrics import SyncMetrics
from edge.sync_plan import latest_per_key

logger = logging.getLogger(__name__)

FEED_KEYS = {"profiles": "subject", "catalog": "product_id", "offers": "offer_id"}


class FeedApplier:
    def __init__(
        self,
        store: EdgeStore,
        metrics: SyncMetrics,
        forget: Callable[[str], None],
        drop_cards: Callable[[str], None],
    ) -> None:
        self.store = store
        self.metrics = metrics
        self._forget = forget
        self._drop_cards = drop_cards
        self.members_changed_file: Path | None = None

    def apply(
        self, feed: str, items: list[dict[str, Any]], cursor: str, done_at: float | None,
        now: float, reader: SyncReader,
    ) -> int:
        """Apply one page (items in ``seq`` order); returns how many changes it made."""
        if feed == "erasures":
            return self._erasures(items, cursor, done_at, now, reader)
        key = FEED_KEYS[feed]
        parse = {"profiles": profile_change, "catalog": catalog_change,
                 "offers": offer_change}[feed]
        changes: list[Any] = []
        for item in latest_per_key(items, key):
            try:
                changes.append(parse(item))
            except BadItem as exc:
                self.metrics.bad_items.labels(feed).inc()
                logger.warning("%s item seq=%s skipped: %s", feed, item.get("seq"), exc)
        removals = [c for c in changes if isinstance(c, Removal)]
        if feed == "catalog":
            upserts_c = [c for c in changes if isinstance(c, CatalogUpsert)]
            return self.store.apply_catalog_page(
                upserts_c, removals, cursor=cursor, done_at=done_at, now=now)
        if feed == "offers":
            upserts_o = [c for c in changes if isinstance(c, OfferUpsert)]
            return self.store.apply_offers_page(
                upserts_o, removals, cursor=cursor, done_at=done_at)
        upserts = []
        for c in changes:
            if isinstance(c, ProfileUpsert):
                if c.consent.get("personalize") is True:
                    upserts.append(c)
                else:  # the edge must not keep a profile without personalize consent
                    removals.append(Removal(c.subject, "consent_revoked"))
        erased = [r for r in removals if r.reason == "erased"]
        for r in erased:  # before the page commits: a crash re-reads the tombstone
            self._forget(r.key)
        kept = [r for r in removals if r.reason != "erased"]
        new = 0
        if self.members_changed_file is not None and upserts:
            subjects = [u.subject for u in upserts]
            new = len(set(subjects) - reader.held_subjects(subjects))
        applied = self.store.apply_profile_page(
            upserts, kept, cursor=cursor, done_at=done_at, now=now)
        if new:
            self._members_changed(new, now)
        for r in kept:
            if r.reason == "consent_revoked":
                self._drop_cards(r.key)
        return applied + len(erased)

    def _members_changed(self, new: int, now: float) -> None:
        """Write the trigger file (a close after writing is what the path unit sees). A
        failure is logged, not raised: the page is applied and the 5-minute timer still
        rebuilds the password file."""
        path = self.members_changed_file
        assert path is not None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w") as out:
                out.write(f"{now:.3f} {new}\n")
        except OSError as exc:
            logger.warning("cannot write %s (%d new members for the broker): %s", path, new,
                           exc.strerror)
            return
        logger.info("%d new members: broker password file rebuild requested", new)

    def _erasures(
        self, items: list[dict[str, Any]], cursor: str, done_at: float | None, now: float,
        reader: SyncReader,
    ) -> int:
        erasures = []
        for item in items:
            try:
                erasures.append(erasure_item(item))
            except BadItem as exc:
                self.metrics.bad_items.labels("erasures").inc()
                logger.warning("erasure item skipped: %s", exc)
        known = reader.known_erasures([e.erasure_id for e in erasures])
        fresh = [e for e in erasures if e.erasure_id not in known]
        for erasure in fresh:  # applied once: a receipt marks it, kept until acked
            self._forget(erasure.subject)
            self.metrics.erasures_applied.inc()
        self.store.record_erasures([e.erasure_id for e in fresh], cursor=cursor,
                                   done_at=done_at, now=now)
        return len(fresh)
