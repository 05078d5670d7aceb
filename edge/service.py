"""Event handlers of the edge: what a check-in, a beacon, a basket or a tap does.

Every handler runs on the dispatcher's single worker thread, the only SQLite writer, so
handlers need no locks and a visit is never ranked twice at once. Visit timing uses the
edge's clock, not the phone's: phones' clocks drift, and hysteresis and dwell must be
measured on one clock. The phone's own ``ts`` is kept in the forwarded events.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge import cards
from edge.live import LiveHub
from edge.messages import DeadLetter
from edge.metrics import EdgeMetrics
from edge.offers import AppliedOffer, priced, with_offer_reasons
from edge.ranking import Ranker
from edge.ranking_inputs import RankingInputs
from edge.rules import CapState, CustomerContext, Decision, decide
from edge.settings import EdgeSettings
from edge.storage_faults import storage_error
from edge.store import EdgeStore
from edge.tokens import TokenRejected, TokenVerifier
from edge.visit import (
    BeaconEvent,
    CheckinEvent,
    GeofenceEvent,
    InvalidEvent,
    Visit,
    VisitChange,
    VisitTracker,
)
from edge.write_behind import WriteBehind, visit_row
from models.features import Context, CustomerHistory
from models.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any], int, bool], None]
EMPTY_HISTORY = CustomerHistory.from_transactions([])
REFRESH_ACTIONS = frozenset({"dismissed", "accepted", "bought"})
HOUSEKEEPING_EVERY_S = 30.0
HELD_CHECKINS_MAX = 1_000  # >= Receive Maximum: every parked check-in fits


class CheckinRefused(Exception):
    """A check-in whose token was refused; ``reason`` is the verifier's code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckinResult:
    visit_id: str | None
    duplicate: bool
    card: dict[str, Any] | None


class EdgeService:
    """Turns inbound events into visits, rankings, cards, offers and outbox rows."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        store: EdgeStore,
        ranker: Ranker,
        verifier: TokenVerifier,
        tracker: VisitTracker,
        live: LiveHub,
        metrics: EdgeMetrics,
        publish: Publish,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ranker = ranker
        self.verifier = verifier
        self.tracker = tracker
        self.live = live
        self.metrics = metrics
        self.publish = publish
        self.clock = clock
        self.topics = settings.topics()
        self._tz = ZoneInfo(settings.timezone)
        self.inputs = RankingInputs(store)
        self._last_housekeeping = 0.0
        self._last_stats = 0.0
        # rows written after the cards went out (edge.write_behind); the dispatcher calls
        # ``flush`` when idle and acks QoS 1 events only after it
        self.deferred = WriteBehind(store)
        # Check-ins per member (MQTT and HTTP): a leaked app key must not make a store rank
        # one member in a loop; over the limit is a counted ``rate_limited`` dead letter.
        self.subject_limiter = RateLimiter(settings.rate_limits.subject_checkins_per_min)
        # Set by the hub sync: queue a geofence approach for the hub (never blocks).
        self.announce: Callable[[str], None] | None = None
        # Check-ins verified and tracked whose row a full disk refused (edge.storage_faults),
        # by event id, until their retry; bounded (the oldest is dropped, its card lost).
        self._held_checkins: dict[str, tuple[Any, list[VisitChange], float]] = {}

    def _hold_checkin(self, event_id: str, held: tuple[Any, list[VisitChange], float]) -> None:
        self._held_checkins[event_id] = held
        if len(self._held_checkins) > HELD_CHECKINS_MAX:
            del self._held_checkins[next(iter(self._held_checkins))]

    def handlers(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "checkin": self.on_checkin,
            "geofence": self.on_geofence,
            "beacon": self.on_beacon,
            "pos": self.on_pos,
            "feedback": self.on_feedback,
        }

    # -- inbound events -------------------------------------------------------------

    def on_checkin(self, msg: Any) -> CheckinResult:
        if self.store.is_processed(msg.event_id):
            self.metrics.duplicates.labels("checkin").inc()
            return CheckinResult(None, True, None)
        held = self._held_checkins.pop(msg.event_id, None)
        if held is not None:  # verified and tracked before the disk refused its row
            claims, changes, now = held
        else:
            now = self.clock()
            try:
                # the topic's subject is checked before the token id is spent (edge.tokens)
                claims = self.verifier.verify(msg.token, now, msg.subject)
            except TokenRejected as exc:
                self.metrics.tokens_rejected.labels(exc.reason).inc()
                logger.warning("check-in %s refused: %s", msg.event_id, exc.reason)
                raise CheckinRefused(exc.reason, exc.detail) from exc
            if self.subject_limiter.take(claims.subject):  # one dict look-up (issue 6)
                self.metrics.rate_limited.labels("subject_checkin").inc()
                raise DeadLetter("checkin", "rate_limited", "member over its check-in limit",
                                 msg.event_id)
            changes = self._track(CheckinEvent(msg.event_id, claims.subject, now, claims.scopes))
        visit = self.tracker.get(claims.subject)
        # Recorded before the effects, with the visit it checked in to: a crash now costs
        # this customer one card (the app may check in again), never a replayable token.
        try:
            accepted = self.store.accept_checkin(
                msg.event_id, claims.token_id, claims.expires_at, now,
                visit_row(visit) if visit is not None else None)
        except Exception as exc:
            if storage_error(exc) is not None:
                # The disk refused the row: the token id is already spent in memory and the
                # tracker has the visit, so the retry of this event (same id) continues here
                # instead of being refused as a replay.
                self._hold_checkin(msg.event_id, (claims, changes, now))
            raise
        if not accepted:
            self.metrics.duplicates.labels("checkin").inc()
            return CheckinResult(None, True, None)
        self._handle_changes(changes, now, msg.event_id,
                             written=visit.visit_id if visit is not None else None)
        visit = self.tracker.get(claims.subject)
        visit_id = visit.visit_id if visit else None
        return CheckinResult(visit_id, False, self.live.card(visit_id) if visit_id else None)

    def on_geofence(self, msg: Any) -> None:
        now = self.clock()
        event = GeofenceEvent(msg.event_id, msg.subject, now, msg.transition)
        self._handle_changes(self._track(event), now, msg.event_id)
        if (
            msg.transition == "enter"
            and self.announce is not None
            and self.store.get_profile(msg.subject) is None
        ):  # approaching, unknown here: ask the hub to put the member in this store's feed
            self.announce(msg.subject)

    def on_beacon(self, msg: Any) -> None:
        now = self.clock()
        event = BeaconEvent(msg.event_id, msg.subject, now, msg.zone, msg.rssi, msg.beacon_id)
        self._handle_changes(self._track(event), now, msg.event_id)

    def on_pos(self, msg: Any) -> bool:
        now = self.clock()
        lines = [(line.product_id, line.quantity, line.unit_price) for line in msg.lines]
        applied = self.store.apply_pos_basket(
            msg.event_id,
            basket_id=msg.basket_id,
            subject=msg.subject,
            ts=min(msg.ts, now),
            lines=lines,
            payload=msg.model_dump(mode="json"),
        )
        if applied:
            self.inputs.mark_stale()  # stock went down
        else:
            self.metrics.duplicates.labels("pos").inc()
        return applied

    def on_feedback(self, msg: Any) -> bool:
        now = self.clock()
        applied = self.store.record_feedback(
            msg.event_id,
            subject=msg.subject,
            visit_id=msg.visit_id,
            product_id=msg.product_id,
            action=msg.action,
            channel=msg.channel,
            ts=now,
            payload=msg.model_dump(mode="json"),
        )
        if not applied:
            self.metrics.duplicates.labels("feedback").inc()
            return False
        visit = self.tracker.get(msg.subject)
        if (
            visit is not None
            and visit.checked_in
            and visit.ended_at is None
            and msg.action in REFRESH_ACTIONS
        ):
            self.recommend(visit, "refresh", now, zone=visit.zone, cause=msg.event_id)
        return True

    def tick(self) -> None:
        """Timers: dwell thresholds, visit ends, token purge, statistics refresh."""
        now = self.clock()
        self._handle_changes(self.tracker.tick(now), now, None)
        self.inputs.notice_changes()
        if now - self._last_housekeeping >= HOUSEKEEPING_EVERY_S:
            self._last_housekeeping = now
            self.store.purge_tokens(now)
            self.metrics.outbox_pending.set(self.store.outbox_count())
        if now - self._last_stats >= self.settings.ranking.stats_refresh_s:
            self.refresh_stats(now)

    def refresh_stats(self, now: float) -> None:
        self._last_stats = now
        since = now - self.settings.ranking.stats_window_days * 86_400
        self.ranker.refresh_stats(self.store.all_purchases(since_ts=since), as_of=now)

    def forget(self, subject: str) -> None:
        """Erasure: drop every trace of the subject on this device."""
        self.flush()  # nothing deferred may land after the delete
        self.tracker.forget(subject)
        self.store.delete_member(subject)
        self.live.forget_subject(subject)
        self.inputs.forget_offers()  # segment offers' subjects, reloaded without them

    # -- visits → recommendations ---------------------------------------------------

    def _track(self, event: CheckinEvent | GeofenceEvent | BeaconEvent) -> list[VisitChange]:
        try:
            return self.tracker.apply(event)
        except InvalidEvent as exc:  # e.g. a NaN RSSI: valid JSON, useless event
            kind = type(event).__name__.removesuffix("Event").lower()
            raise DeadLetter(kind, "invalid", exc.reason, event.event_id) from exc

    def _handle_changes(
        self, changes: list[VisitChange], now: float, cause: str | None,
        written: str | None = None,
    ) -> None:
        """``written``: a visit whose row the caller already wrote as it is now."""
        saved: dict[str, Visit] = {}
        for change in changes:
            visit = change.visit
            if change.kind in ("visit_started", "checked_in", "visit_ended"):
                saved[visit.visit_id] = visit  # the latest snapshot is written once
            if change.kind == "checked_in":
                self.recommend(visit, "checkin", now, zone=visit.zone, cause=cause)
            elif change.kind == "zone_dwell" and visit.checked_in:
                self.recommend(visit, "zone_dwell", now, zone=change.zone, cause=cause)
            elif change.kind == "zone_left":
                self.live.patch_card(visit.visit_id, zone=None, dwell_since=None)
            elif change.kind == "visit_ended":
                self.live.remove_card(visit.visit_id, "left")
        for visit in saved.values():
            if visit.visit_id != written:
                self.deferred.save(visit)

    def flush(self) -> None:
        """Write the rows deferred past the cards (edge.write_behind), one transaction."""
        self.deferred.flush()

    def recommend(
        self, visit: Visit, trigger: str, now: float, zone: str | None, cause: str | None = None,
        *, redisplay: bool = False,
    ) -> Decision:
        """Rank, apply rules, log, deliver. Consent is checked here, on every call.

        ``redisplay`` (a visit restored after a restart, edge.visit_restart): the staff card
        only. No app offer (the phone had its push before the restart) and no impressions
        (staff saw the card before; logging it again would spend the visit's caps)."""
        started = time.perf_counter()
        scopes = visit.scopes
        profile = None
        history = EMPTY_HISTORY
        if "personalize" in scopes:
            profile = self.store.get_profile(visit.subject)
            if profile is not None:  # the hub's consent record can only narrow the token's
                scopes = frozenset(s for s in scopes if profile.consent.get(s, False))
            if "personalize" in scopes:
                rows = self.store.purchase_history(
                    visit.subject, self.settings.ranking.history_max_baskets
                )
                history = CustomerHistory.from_transactions(rows)
            else:
                profile = None
        local = datetime.fromtimestamp(now, self._tz)
        offset = local.utcoffset() or timedelta(0)
        context = Context(
            timestamp=now, store_id=self.settings.store, utc_offset_s=int(offset.total_seconds())
        )
        ranked = self.ranker.rank(
            history, self.inputs.in_stock(zone), context, self.settings.ranking.rules_pool
        )
        # Segment offers only for a customer whose data we may use (the hub targeted them
        # by it); the rules judge the price after the offer (edge.offers.priced).
        applied = self.inputs.offers(now).for_items(
            ((c.product_id, c.category, c.price) for c in ranked.candidates),
            visit.subject if "personalize" in scopes else None, now,
        )
        pool = priced(ranked.candidates, applied)
        day_start = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        try:
            self.flush()  # caps count every impression logged so far
        except Exception as exc:
            if storage_error(exc) is None:
                raise
            # A full disk: rank on the caps SQLite has (the rows not yet written are
            # kept and the worker's group commit retries them and holds the acks).
            logger.debug("caps read before the deferred rows could be written: %s", exc)
        counts = self.store.cap_counts(visit.subject, visit.visit_id, day_start)
        personal = history is not EMPTY_HISTORY
        customer = CustomerContext(
            scopes=scopes,
            typical_basket_value=history.typical_basket_value if personal else None,
            typical_item_price=history.typical_item_price if personal else None,
        )
        caps = CapState(
            shown_in_visit=counts.shown_in_visit,
            dismissed_in_visit=counts.dismissed_in_visit,
            impressions_today=counts.impressions_today,
            app_offers_today=counts.app_offers_today,
            app_offers_in_visit=counts.app_offers_in_visit,
        )
        hour = local.hour
        chosen = decide(pool, customer, caps, self.settings.rules, hour)
        # Reasons only for what the rules chose; deciding again on exactly those picks
        # the same items and lets the rules filter the reasons by consent.
        picked = {s.product_id for s in chosen.staff}
        explained = with_offer_reasons(self.ranker.explained(
            [c for c in pool if c.product_id in picked], history, context, ranked.source,
            self.inputs.name_of,
        ), applied, now, self._tz)
        decision = replace(
            decide(explained, customer, caps, self.settings.rules, hour), dropped=chosen.dropped
        )
        event_id = uuid.uuid4().hex
        card = cards.staff_card(
            event_id=event_id,
            ts=now,
            visit_id=visit.visit_id,
            subject=visit.subject,
            scopes=scopes,
            zone=zone,
            dwell_since=visit.zone_since if zone else None,
            trigger=trigger,
            trigger_event_id=cause,
            source=ranked.source,
            model_version=ranked.model_version,
            decision=decision,
            profile=_profile_view(profile),
            today=local.date(),
            offers=applied,
            styles=self.inputs.style_items,
        )
        # Deliver first, then record: only this thread ranks, so nothing can read the
        # caps in between, and the tablet gets its card ~0.15 ms sooner.
        self.publish(self.topics.staff_recommendations, card, 1, False)
        self.live.update_card(visit.visit_id, card)
        self.metrics.recommendations.labels("staff", ranked.source).inc()
        if not redisplay:
            self.deferred.log(event_id, visit, "staff", decision.staff, now)
            self._deliver_app_offer(visit, decision, now, applied)
        self.metrics.ranking_seconds.observe(time.perf_counter() - started)
        return decision

    def _deliver_app_offer(
        self, visit: Visit, decision: Decision, now: float, applied: Mapping[str, AppliedOffer]
    ) -> None:
        if decision.app_offer is None:
            self.metrics.app_offers_blocked.labels(decision.app_offer_blocked or "none").inc()
            return
        event_id = uuid.uuid4().hex
        offer = cards.app_offer(
            event_id=event_id,
            ts=now,
            visit_id=visit.visit_id,
            suggestion=decision.app_offer,
            offer=applied.get(decision.app_offer.product_id),
        )
        self.publish(self.topics.app_offers(visit.subject), offer, 1, False)
        self.deferred.log(event_id, visit, "app", (decision.app_offer,), now)
        self.metrics.recommendations.labels("app", "model").inc()


def _profile_view(profile: Any) -> cards.ProfileView | None:
    if profile is None:
        return None
    return cards.ProfileView(
        first_name=profile.first_name,
        tier=profile.tier,
        birthday=profile.birthday,
        preferences=dict(profile.preferences),
    )
