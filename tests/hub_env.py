"""Shared pieces of the hub tests: a settable clock, CRM CSV rows, event builders."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from models.identity import pseudonymous_id

HEADER = ("loyalty_number,first_name,last_name,email,birthday,tier,home_store,sizes,brands,"
          "consent_personalize,consent_staff_display,consent_app_offers")
T0 = 1_800_000_000.0


class Clock:
    """A clock the test moves (relevance windows, key overlap)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def subject(loyalty: str | int, salt: str = "demo") -> str:
    return pseudonymous_id(str(loyalty), salt)


def csv_text(*rows: str) -> str:
    return "\n".join((HEADER, *rows)) + "\n"


def member_row(loyalty: int, home: str = "s1", consent: str = "yes,yes,yes",
               first_name: str = "Ana") -> str:
    return (f"{loyalty},{first_name},Doe,a{loyalty}@example.com,1990-01-02,gold,{home},"
            f"dairy=large,Sunvale;Crispo,{consent}")


def basket(subj: str | None, ts: float, *, lines: int = 2, event_id: str | None = None,
           basket_id: str | None = None) -> dict[str, Any]:
    """A pos_basket outbox event as the edge sends it (payload as apply_pos_basket keeps)."""
    event_id = event_id or uuid.uuid4().hex
    payload = {"v": 1, "event_id": event_id, "ts": ts, "basket_id": basket_id or f"b-{event_id}",
               "subject": subj,
               "lines": [{"product_id": f"p{i}", "quantity": 1 + i, "unit_price": 2.0}
                         for i in range(lines)]}
    return {"event_id": event_id, "kind": "pos_basket", "subject": subj, "payload": payload,
            "created_at": ts}


def write_config(path: Path, settings: Any) -> Path:
    from edge.devserver import settings_toml

    path.write_text(settings_toml(settings.model_dump(mode="json")))
    return path
