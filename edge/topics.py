"""The topic tree of one store, and the table from topic to handler kind.

Layout (``<p>`` = prefix, default ``storeside/<chain>/<store>``)::

    <p>/in/app/<subject>/checkin    app → edge   QoS 1
    <p>/in/app/<subject>/geofence   app → edge   QoS 1
    <p>/in/app/<subject>/beacon     app → edge   QoS 0 (latest sighting wins)
    <p>/in/app/<subject>/feedback   app → edge   QoS 1
    <p>/in/pos                      POS → edge   QoS 1
    <p>/in/staff/feedback           tablet → edge QoS 1
    <p>/staff/recommendations       edge → tablets QoS 1
    <p>/app/<subject>/offers        edge → one app QoS 1
    <p>/status                      edge, retained, last will "offline"
    <p>/deadletter                  edge, QoS 0, rejected inbound (metadata only)

Why the subject is a topic level for everything an app sends: a broker ACL such as
``pattern write storeside/+/+/in/app/%u/#`` then lets each app publish only its own
events (and ``pattern read storeside/+/+/app/%u/offers`` read only its own offers), and
the edge checks that the payload names the same subject as the topic. Pure module.
"""

from __future__ import annotations

import re
from typing import Final

from edge.messages import SUBJECT_PATTERN

DEFAULT_PREFIX: Final = "storeside/{chain}/{store}"
APP_KINDS: Final = ("checkin", "geofence", "beacon", "feedback")
# Subscription QoS is the maximum the broker delivers at: beacons are forced down to
# QoS 0 (lossy, no ack round trip), everything else is at-least-once.
KIND_QOS: Final = {"checkin": 1, "geofence": 1, "beacon": 0, "feedback": 1, "pos": 1}

_LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SUBJECT = re.compile(SUBJECT_PATTERN)


def _check_level(name: str, value: str) -> str:
    if not _LEVEL.match(value):
        raise ValueError(f"{name} {value!r} is not a safe topic level ([A-Za-z0-9_.-]{{1,64}})")
    return value


class Topics:
    """All topic names of one store.

    ``Topics("storeside/acme/s042")`` takes a ready prefix; ``Topics("acme", "s042")``
    fills the template ``prefix`` (default ``storeside/{chain}/{store}``).
    """

    def __init__(
        self, prefix_or_chain: str, store: str | None = None, *, prefix: str = DEFAULT_PREFIX
    ) -> None:
        if store is None:
            formatted = prefix_or_chain
        else:
            chain = _check_level("chain", prefix_or_chain)
            formatted = prefix.format(chain=chain, store=_check_level("store", store))
        if (
            not formatted
            or formatted.startswith("/")
            or formatted.endswith("/")
            or any(c in formatted for c in "+#\0")
            or "//" in formatted
        ):
            raise ValueError(f"bad topic prefix {formatted!r}")
        self.prefix = formatted
        self._head = formatted + "/"
        self.pos = f"{formatted}/in/pos"
        self.staff_feedback = f"{formatted}/in/staff/feedback"
        self.staff_recommendations = f"{formatted}/staff/recommendations"
        self.status = f"{formatted}/status"
        self.dead_letters = f"{formatted}/deadletter"

    def __repr__(self) -> str:
        return f"Topics({self.prefix!r})"

    # ---- inbound (what apps / POS / tablets publish to)
    def app(self, subject: str, kind: str) -> str:
        if kind not in APP_KINDS:
            raise ValueError(f"{kind!r} is not an app event kind {APP_KINDS}")
        if not _SUBJECT.match(subject):
            raise ValueError("subject is not a pseudonymous id")
        return f"{self.prefix}/in/app/{subject}/{kind}"

    def checkin(self, subject: str) -> str:
        return self.app(subject, "checkin")

    def geofence(self, subject: str) -> str:
        return self.app(subject, "geofence")

    def beacon(self, subject: str) -> str:
        return self.app(subject, "beacon")

    def feedback(self, subject: str | None = None) -> str:
        """An app's own feedback topic, or the staff tablets' one when subject is None."""
        return self.staff_feedback if subject is None else self.app(subject, "feedback")

    # ---- outbound
    def app_offers(self, subject: str) -> str:
        if not _SUBJECT.match(subject):
            raise ValueError("subject is not a pseudonymous id")
        return f"{self.prefix}/app/{subject}/offers"

    # ---- the subscription table
    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [(f"{self.prefix}/in/app/+/{kind}", KIND_QOS[kind]) for kind in APP_KINDS]
        subs.append((self.pos, KIND_QOS["pos"]))
        subs.append((self.staff_feedback, KIND_QOS["feedback"]))
        return subs

    def route(self, topic: str) -> tuple[str, str | None] | None:
        """``(kind, subject)`` of an inbound topic, subject None for shared topics."""
        if not topic.startswith(self._head):
            return None
        rest = topic[len(self._head):]
        if rest == "in/pos":
            return ("pos", None)
        if rest == "in/staff/feedback":
            return ("feedback", None)
        parts = rest.split("/")
        if (
            len(parts) == 4
            and parts[0] == "in"
            and parts[1] == "app"
            and parts[3] in KIND_QOS
            and parts[3] != "pos"
            and _SUBJECT.match(parts[2])
        ):
            return (parts[3], parts[2])
        return None

    def kind_of(self, topic: str) -> str | None:
        routed = self.route(topic)
        return routed[0] if routed else None

    def subject_of(self, topic: str) -> str | None:
        routed = self.route(topic)
        return routed[1] if routed else None
