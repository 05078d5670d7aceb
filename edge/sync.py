"""The edge's hub sync, offline-first: two threads that catch up whenever the hub is there.

* the pull thread reads the feeds (erasures first, then profiles, catalog, offers) from
  their cursors, page by page, each page applied in ONE store transaction with its cursor;
  then acks erasures, sends geofence announces, refreshes the check-in keys (JWKS) and
  sends a heartbeat;
* the push thread (``edge.sync_push``) drains the outbox in batches and deletes only what
  the hub answered for.

Nothing the store serves waits for the hub: check-ins rank from the local SQLite, and a hub
that is away only shows as staleness in ``/v1/status`` and ``/metrics``.

Who writes what (the single-writer rule): feed pages and outbox acks touch SQLite only, so
the sync threads write them directly under the store's write lock (``EdgeStore._write``),
one short transaction each. Erasure also touches state of the event worker (visit tracker,
live cards), so it runs on the worker via ``forget`` (``dispatcher.call``), never here.
Decisions (backoff, batching, what a hub answer means) live in ``edge.sync_plan``.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from edge.clock_skew import ClockSkew
from edge.metrics import MetricSet
from edge.settings import HubLinkSettings
from edge.store import EdgeStore
from edge.store_key import key_source
from edge.store_sync import SyncReader
from edge.sync_announce import AnnounceQueue
from edge.sync_apply import FeedApplier
from edge.sync_http import HubLink, HubRefused, HubUnavailable
from edge.sync_metrics import SyncMetrics
from edge.sync_plan import (
    FEED_PATHS,
    FEEDS,
    Backoff,
    BadResponse,
    JobState,
    due_jobs,
    is_stale,
    parse_page,
    seconds_until_due,
    staleness,
    worst_staleness,
)
from edge.sync_push import OutboxPusher, error_kind
from hub.tokens import jwks_to_public_keys

logger = logging.getLogger(__name__)

PULL_JOBS = (*FEEDS, "acks", "keys", "heartbeat")
ANNOUNCE = "announce"  # not on a timer: runs as soon as one is queued (unless backing off)
KEYS_INTERVAL_S = 60.0  # the hub keeps a rotated key valid for a day: a minute is plenty
PERSIST_IDLE_EVERY_S = 60.0  # an idle feed's "last success" is written at most this often

ForgetFn = Callable[[str], None]
KeysFn = Callable[[Mapping[str, bytes]], None]  # {kid: PEM} of the hub's check-in keys


class SyncClient:
    """Keeps one store's cache in step with the hub; see the module docstring."""

    def __init__(
        self,
        link: HubLinkSettings,
        *,
        store_id: str,
        store: EdgeStore,
        metrics: SyncMetrics,
        forget: ForgetFn,
        drop_cards: ForgetFn | None = None,
        install_keys: KeysFn | None = None,
        heartbeat_fields: Callable[[], dict[str, Any]] = dict,
        clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
        transport: httpx.BaseTransport | None = None,
        edge_clock: Callable[[], float] | None = None,
        skew_warn_s: float = 30.0,
    ) -> None:
        """``edge_clock``: the clock the edge verifies check-in tokens by (default
        ``clock``); the heartbeat measures it against the hub's and warns once the skew
        passes ``skew_warn_s`` (the token leeway: beyond it, hub tokens are refused)."""
        if link.hub_url is None:
            raise ValueError("SyncClient needs hub.hub_url")
        self._store_key = key_source(link.store_key, link.store_key_file)
        self.link = link
        self.store_id = store_id
        self.store = store
        self.metrics = metrics
        self._install_keys = install_keys
        self._heartbeat_fields = heartbeat_fields
        self._clock = clock
        self._draw = draw
        self._transport = transport
        self._backoff = Backoff(link.backoff_initial_s, link.backoff_max_s, link.backoff_jitter)
        self._local = threading.local()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # the status fields both threads write
        self._announces = AnnounceQueue(link.announce_queue, metrics.announces, clock)
        self.connected = False
        self.last_contact_at: float | None = None
        self._jobs = {name: JobState() for name in PULL_JOBS}
        self._announce_state = JobState()
        self._pull_link_state = JobState()
        self.applier = FeedApplier(store, metrics, forget, drop_cards or (lambda subject: None))
        self.pusher = OutboxPusher(
            store=store, metrics=metrics, backoff=self._backoff, batch_size=link.batch_size,
            interval_s=link.push_interval_s, io=self._io, on_contact=self._contact,
            clock=clock, draw=draw,
        )
        self._cursors: dict[str, str] = {}
        self._last_success: dict[str, float | None] = dict.fromkeys(FEEDS)
        self._persisted_success: dict[str, float] = {}
        self._hub_keys: dict[str, bytes] | None = None
        self._edge_clock = edge_clock or clock
        self.skew = ClockSkew(MetricSet(metrics.registry).gauge(
            "storeside_hub_clock_skew_seconds",
            "Edge clock minus hub clock, measured by the last heartbeat (tokens refused "
            "beyond the leeway)"), skew_warn_s)
        self._load_state()
        metrics.watch_staleness(self.staleness_of)

    # ------------------------------------------------------------------ lifecycle

    def _load_state(self) -> None:
        reader = SyncReader(self.store.path)
        try:
            for feed, (cursor, at) in reader.feed_state().items():
                self._cursors[feed] = cursor
                self._last_success[feed] = at
                if at is not None:
                    self._persisted_success[feed] = at
            stored = reader.sync_keys()
            self.metrics.erasure_acks_pending.set(len(reader.unacked_erasures()))
        finally:
            reader.close()
        if stored and self._install_keys is not None:
            # Offline-first restart: the keys fetched last time verify check-ins until the
            # hub answers again.
            keys = jwks_to_public_keys({"keys": list(stored.values())})
            self._hub_keys = keys
            self._install_keys(keys)
            self.metrics.hub_keys.set(len(keys))

    def start(self) -> SyncClient:
        self._stop.clear()
        loops = (
            ("edge-sync-pull", self._pull_loop),
            ("edge-sync-push", functools.partial(self.pusher.run, self._stop)),
        )
        for name, loop in loops:
            thread = threading.Thread(target=self._run, args=(loop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("hub sync to %s started for store %s", self.link.hub_url, self.store_id)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop both threads; a call in flight ends within the HTTP timeout."""
        self._stop.set()
        self._wake.set()
        self.pusher.wake.set()
        limit = self.link.timeout_s + 2.0 if timeout is None else timeout
        for thread in self._threads:
            thread.join(limit)
            if thread.is_alive():
                logger.warning("sync thread %s did not stop within %.1fs", thread.name, limit)
        self._threads = []
        self._close_io()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _run(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Exception:
            logger.exception("sync thread crashed; the store keeps serving from its cache")
        finally:
            self._close_io()

    def _io(self) -> tuple[HubLink, SyncReader]:
        """This thread's HTTP link and read connection (created on first use)."""
        io = getattr(self._local, "io", None)
        if io is None:
            assert self.link.hub_url is not None
            io = (
                HubLink(self.link.hub_url, store=self.store_id, store_key=self._store_key,
                        timeout_s=self.link.timeout_s, transport=self._transport),
                SyncReader(self.store.path),
            )
            self._local.io = io
        return io  # type: ignore[no-any-return]

    def _close_io(self) -> None:
        io = getattr(self._local, "io", None)
        if io is not None:
            self._local.io = None
            io[0].close()
            io[1].close()

    # ------------------------------------------------------------------ status

    def staleness_of(self, feed: str) -> float | None:
        return staleness({feed: self._last_success.get(feed)}, self._clock())[feed]

    def status(self) -> dict[str, Any]:
        per_feed = staleness(self._last_success, self._clock())
        done = [at for at in self._last_success.values() if at is not None]
        return {
            "hub_connected": self.connected,
            "last_sync_at": max(done) if done else None,
            "staleness_s": per_feed,
            "sync_stale": is_stale(per_feed, self.link.stale_after_s),
            "feed_cursors": dict(self._cursors),
            "hub_clock_skew_s": self.skew.value,
        }

    def _contact(self, ok: bool) -> None:
        with self._lock:
            came_back = ok and not self.connected
            self.connected = ok
            if ok:
                self.last_contact_at = self._clock()
        self.metrics.hub_connected.set(1 if ok else 0)
        if came_back:  # whichever thread saw the hub first: the other stops backing off
            self._pull_link_state = JobState()
            self._wake.set()
            self.pusher.resume()

    # ------------------------------------------------------------------ announces

    def announce(self, subject: str) -> None:
        """A geofence approach of a member without a local profile: queue it, never block."""
        if self._announces.offer(subject):
            self._wake.set()

    def _send_announces(self, link: HubLink) -> bool:
        pending = self._announces.pending()
        for subject in pending:
            try:
                link.announce(subject)
                result = "sent"
            except HubRefused as exc:  # permanent for this subject: do not ask again
                logger.warning("hub refused the announce of %s: %s", subject, exc)
                result = "refused"
            self._announces.done(subject, result)
        return bool(pending)

    # ------------------------------------------------------------------ pull

    def _pull_loop(self) -> None:
        while not self._stop.is_set():
            self.pull_round()
            wait = seconds_until_due(
                self._jobs, self._pull_link_state, self._clock(), self.link.poll_interval_s
            )
            if self._announce_due(self._clock()):
                wait = 0.0
            self._wake.wait(wait)
            self._wake.clear()

    def pull_round(self) -> None:
        """Run every due pull job once (the pull thread's step; tests and benches call it)."""
        link, reader = self._io()
        now = self._clock()
        if self._announce_due(now):
            self._attempt(ANNOUNCE, lambda: self._announced(link))
        for job in due_jobs(self._jobs, self._pull_link_state, now):
            if self._stop.is_set() or self._pull_link_state.next_at > self._clock():
                return
            self._attempt(job, functools.partial(self._run_job, job, link, reader))

    def pull_feed_to_end(self, feed: str) -> int:
        """Read one feed page by page until the hub says there is no more (the pull
        thread's work for one feed, synchronously; benchmarks and tools call it)."""
        link, reader = self._io()
        pages = 1
        while self._pull_feed(feed, link, reader):
            pages += 1
        return pages

    def _announce_due(self, now: float) -> bool:
        state = self._announce_state
        return (bool(self._announces) and self._pull_link_state.next_at <= now
                and (state.failures == 0 or state.next_at <= now))

    def _announced(self, link: HubLink) -> bool:
        if self._send_announces(link):
            self._jobs["profiles"] = JobState(self._clock())  # their profiles: next poll now
        return False

    def _run_job(self, job: str, link: HubLink, reader: SyncReader) -> bool:
        """One step of a job; True if it has more to do right away."""
        if job in FEEDS:
            return self._pull_feed(job, link, reader)
        if job == "acks":
            self._ack_erasures(link, reader)
        elif job == "keys":
            self._refresh_keys(link)
        elif job == "heartbeat":
            sent_at = self._edge_clock()
            answer = link.heartbeat({**self._heartbeat(reader), "clock": sent_at})
            self.skew.note(answer, sent_at, self._edge_clock())
        return False

    def _attempt(self, job: str, step: Callable[[], bool]) -> None:
        """Run one job step and reschedule it (and the link) from its outcome."""
        now = self._clock()
        interval = KEYS_INTERVAL_S if job == "keys" else self.link.poll_interval_s
        try:
            more = step()
        except HubUnavailable as exc:
            self._pull_link_state = self._pull_link_state.failed(now, self._backoff, self._draw())
            self._contact(False)
            self.metrics.errors.labels(job, "unreachable").inc()
            self._log_failure(job, self._pull_link_state.failures, f"hub unreachable: {exc}")
            return
        except Exception as exc:
            # The hub said no, answered off-contract, or this side failed (the worker could
            # not take an erasure, the store is closing): only this job backs off.
            state = self._state(job).failed(now, self._backoff, self._draw())
            self._set_state(job, state)
            self.metrics.errors.labels(job, error_kind(exc)).inc()
            if isinstance(exc, HubRefused | BadResponse):
                self._log_failure(job, state.failures, exc)
                self._pull_link_state = JobState()
                self._contact(True)
            elif state.failures == 1 or state.failures % 10 == 0:
                logger.exception("sync %s failed (%d in a row)", job, state.failures)
            return
        self._pull_link_state = JobState()
        self._contact(True)
        self._set_state(job, self._state(job).succeeded(self._clock(), interval, more))

    def _state(self, job: str) -> JobState:
        return self._announce_state if job == ANNOUNCE else self._jobs[job]

    def _set_state(self, job: str, state: JobState) -> None:
        if job == ANNOUNCE:
            self._announce_state = state
        else:
            self._jobs[job] = state

    @staticmethod
    def _log_failure(job: str, failures: int, detail: object) -> None:
        # first failure, then every 10th: a hub away for a day must not flood the log
        if failures == 1 or failures % 10 == 0:
            logger.warning("sync %s failed (%d in a row): %s", job, failures, detail)

    def _pull_feed(self, feed: str, link: HubLink, reader: SyncReader) -> bool:
        cursor = self._cursors.get(feed, "0")
        body = link.feed(FEED_PATHS[feed], cursor, self.link.feed_page_size)
        page = parse_page(body, cursor)
        now = self._clock()
        done_at = None if page.more else now
        wrote = True
        if page.items:
            applied = self.applier.apply(feed, page.items, page.cursor, done_at, now, reader)
            self.metrics.items_applied.labels(feed).inc(applied)
            if feed == "erasures" and applied:
                self._jobs["acks"] = JobState(now)  # confirm to the hub right away
        elif page.cursor != cursor or (
            done_at is not None
            and done_at - self._persisted_success.get(feed, 0.0) >= PERSIST_IDLE_EVERY_S
        ):
            self.store.save_cursor(feed, page.cursor, done_at)
        else:
            wrote = False  # an idle poll: nothing to write but the time, kept in memory
        if wrote and done_at is not None:
            self._persisted_success[feed] = done_at
        self._cursors[feed] = page.cursor
        if done_at is not None:
            self._last_success[feed] = done_at
        return page.more

    def _ack_erasures(self, link: HubLink, reader: SyncReader) -> None:
        pending = reader.unacked_erasures()
        for done, erasure_id in enumerate(pending):
            try:
                link.ack_erasure(erasure_id)
            except HubRefused as exc:
                if exc.status != 404:
                    self.metrics.erasure_acks_pending.set(len(pending) - done)
                    raise
                logger.warning("hub does not know erasure %s; receipt closed", erasure_id)
            self.store.mark_erasure_acked(erasure_id, self._clock())
        self.metrics.erasure_acks_pending.set(0)

    def _refresh_keys(self, link: HubLink) -> None:
        body = link.jwks()
        try:
            keys = jwks_to_public_keys(body if isinstance(body, dict) else {})
        except ValueError as exc:
            raise BadResponse(f"JWKS: {exc}") from exc
        if keys == self._hub_keys:
            return
        entries = {jwk["kid"]: jwk for jwk in body["keys"] if jwk.get("kid") in keys}
        self.store.save_sync_keys(entries, self._clock())
        self._hub_keys = keys
        self.metrics.hub_keys.set(len(keys))
        if self._install_keys is not None:
            self._install_keys(keys)
        logger.info("check-in keys from the hub: %s", ", ".join(sorted(keys)) or "none")

    def _heartbeat(self, reader: SyncReader) -> dict[str, Any]:
        per_feed = staleness(self._last_success, self._clock())
        return {
            **self._heartbeat_fields(),
            "outbox_pending": reader.outbox_count(),
            "feeds": dict(self._cursors),
            "staleness_s": worst_staleness(per_feed),
        }
