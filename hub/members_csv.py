"""The CRM's member export (CSV) → validated member records. Pure (no I/O but the text).

Columns (header row required, order free, extra columns refused so a changed export is
noticed; every column but ``loyalty_number`` may be empty):

==================== =======================================================================
loyalty_number       the CRM's member number (hashed to the subject; never stored)
first_name           shown to staff on the tablet (with ``staff_display`` consent)
last_name, email     kept at the hub only (data subject requests, the central team)
birthday             ``YYYY-MM-DD``
tier                 loyalty tier, e.g. ``gold``
home_store           store id (``^[a-z0-9][a-z0-9_-]{0,31}$``)
sizes                ``category=size`` pairs separated by ``;`` (``dairy=family pack;drinks=large``)
brands               brand names separated by ``;``
consent_personalize  ``true/false``, ``yes/no``, ``1/0``, ``y/n`` (empty = not granted)
consent_staff_display  same
consent_app_offers   same
==================== =======================================================================

A bad row is reported with its line number (as an editor shows it) and a reason; it never
stops the rest of the import.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hub.tokens import SCOPES

COLUMNS = (
    "loyalty_number", "first_name", "last_name", "email", "birthday", "tier", "home_store",
    "sizes", "brands", "consent_personalize", "consent_staff_display", "consent_app_offers",
)
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n", ""}
_LOYALTY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STORE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_TEXT = 200


class RowError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MemberRecord:
    line: int
    loyalty_number: str
    first_name: str | None
    last_name: str | None
    email: str | None
    birthday: str | None
    tier: str | None
    home_store: str | None
    preferences: dict[str, Any]
    consent: dict[str, bool]


@dataclass
class ParseResult:
    records: list[MemberRecord] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _text(value: str | None, column: str) -> str | None:
    value = (value or "").strip()
    if len(value) > MAX_TEXT:
        raise RowError("too_long", f"{column} longer than {MAX_TEXT} characters")
    return value or None


def _flag(value: str | None, column: str) -> bool:
    word = (value or "").strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise RowError("bad_consent", f"{column} must be true/false, got {word!r}")


def _birthday(value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise RowError("bad_birthday", f"birthday must be YYYY-MM-DD, got {text!r}") from exc
    if not 1900 <= day.year <= date.today().year:
        raise RowError("bad_birthday", f"birthday {text} out of range")
    return day.isoformat()


def _sizes(value: str | None) -> dict[str, str]:
    sizes: dict[str, str] = {}
    for part in (value or "").split(";"):
        if not part.strip():
            continue
        category, sep, size = part.partition("=")
        if not sep or not category.strip() or not size.strip():
            raise RowError("bad_sizes", f"sizes entry {part.strip()!r} is not category=size")
        sizes[category.strip()] = size.strip()
    return sizes


def parse_row(line: int, row: dict[str, str | None]) -> MemberRecord:
    loyalty = (row.get("loyalty_number") or "").strip()
    if not _LOYALTY.match(loyalty):
        raise RowError("bad_loyalty_number", "loyalty_number missing or not [A-Za-z0-9_-]{1,64}")
    home = _text(row.get("home_store"), "home_store")
    if home is not None and not _STORE.match(home):
        raise RowError("bad_home_store", f"home_store {home!r} is not a store id")
    email = _text(row.get("email"), "email")
    if email is not None and not _EMAIL.match(email):
        raise RowError("bad_email", "email is not an address")
    brands = [b.strip() for b in (row.get("brands") or "").split(";") if b.strip()]
    preferences: dict[str, Any] = {}
    sizes = _sizes(row.get("sizes"))
    if sizes:
        preferences["sizes"] = sizes
    if brands:
        preferences["brands"] = brands
    return MemberRecord(
        line=line,
        loyalty_number=loyalty,
        first_name=_text(row.get("first_name"), "first_name"),
        last_name=_text(row.get("last_name"), "last_name"),
        email=email,
        birthday=_birthday(row.get("birthday")),
        tier=_text(row.get("tier"), "tier"),
        home_store=home,
        preferences=preferences,
        consent={p: _flag(row.get(f"consent_{p}"), f"consent_{p}") for p in SCOPES},
    )


def parse_members_csv(text: str | Iterable[str]) -> ParseResult:
    """Every row of the export, as records or as ``{"line", "reason", "detail"}`` errors."""
    stream = io.StringIO(text) if isinstance(text, str) else text
    reader = csv.DictReader(stream, restkey="__extra__")
    result = ParseResult()
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("loyalty_number",) if c not in header]
    unknown = [h for h in header if h not in COLUMNS]
    if missing or unknown:
        result.errors.append({"line": 1, "reason": "bad_header",
                              "detail": f"missing {missing}, unknown {unknown}"})
        return result
    reader.fieldnames = header
    start = 2
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append({"line": reader.line_num, "reason": "bad_csv", "detail": str(exc)})
            break
        if row.get("__extra__"):
            result.errors.append({"line": start, "reason": "extra_fields",
                                  "detail": "more fields than the header"})
        else:
            try:
                result.records.append(parse_row(start, row))
            except RowError as exc:
                result.errors.append({"line": start, "reason": exc.reason, "detail": str(exc)})
        start = reader.line_num + 1
    return result
