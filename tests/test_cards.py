"""Cards: what staff may see depends on consent; birthdays; stable anonymous tags."""

from __future__ import annotations

from datetime import date

from edge.cards import ProfileView, birthday_this_week, staff_card, subject_tag
from edge.rules import Decision

PROFILE = ProfileView(
    first_name="Mei", tier="gold", birthday="1990-11-24", preferences={"sizes": {"shoes": "38"}}
)
EMPTY = Decision(staff=(), app_offer=None, app_offer_blocked="nothing_eligible", dropped={})


def card(scopes: frozenset[str], profile: ProfileView | None = PROFILE) -> dict:
    return staff_card(
        event_id="e1",
        ts=0.0,
        visit_id="v1",
        subject="m-0123456789abcdef",
        scopes=scopes,
        zone=None,
        dwell_since=None,
        trigger="checkin",
        trigger_event_id="c1",
        source="model",
        model_version="1",
        decision=EMPTY,
        profile=profile,
        today=date(2026, 11, 23),
    )


def test_name_tier_and_profile_only_with_staff_display() -> None:
    shown = card(frozenset({"personalize", "staff_display"}))
    assert shown["display_name"] == "Mei" and shown["tier"] == "gold"
    assert shown["profile"]["preferences"]["sizes"]["shoes"] == "38"
    assert shown["profile"]["birthday_this_week"] is True
    hidden = card(frozenset({"personalize"}))
    assert hidden["display_name"] == f"Customer {subject_tag('m-0123456789abcdef')}"
    assert hidden["tier"] is None and hidden["profile"] is None
    assert "Mei" not in str(hidden)


def test_subject_tag_is_stable_and_short() -> None:
    assert subject_tag("m-1") == subject_tag("m-1") and len(subject_tag("m-1")) == 3
    assert subject_tag("m-1") != subject_tag("m-2")


def test_birthday_window_wraps_the_year_and_survives_bad_dates() -> None:
    assert birthday_this_week("2000-01-01", date(2026, 12, 30))
    assert not birthday_this_week("2000-06-01", date(2026, 12, 30))
    assert birthday_this_week("2000-02-29", date(2027, 3, 1))
    assert not birthday_this_week("not a date", date(2026, 1, 1))
    assert not birthday_this_week(None, date(2026, 1, 1))
