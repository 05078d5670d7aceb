"""Canonical transactions: the one format every chain's data is turned into.

Training, evaluation, the ``recommend`` command and the edge all read purchases as
``Transaction`` rows, so a new chain only needs a converter to this CSV layout:

    customer_id, basket_id, timestamp, product_id, quantity, price, category, store_id

Ids are strings. ``timestamp`` is ISO 8601 (date or date-time) or epoch seconds.
``price`` (unit price), ``category`` and ``store_id`` may be empty.

This module is pure (file reading only through the iterables passed in, plus the two
``load_*`` helpers that open a path) so the edge can import it without pulling I/O.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CANONICAL_COLUMNS = (
    "customer_id",
    "basket_id",
    "timestamp",
    "product_id",
    "quantity",
    "price",
    "category",
    "store_id",
)
REQUIRED_COLUMNS = ("customer_id", "basket_id", "timestamp", "product_id")


class TransactionFormatError(ValueError):
    """A row or header that does not follow the canonical format (message says where)."""


@dataclass(frozen=True, slots=True)
class Transaction:
    """One product line of one basket."""

    customer_id: str
    basket_id: str
    timestamp: float  # epoch seconds, UTC
    product_id: str
    quantity: float = 1.0
    price: float | None = None  # unit price
    category: str | None = None
    store_id: str | None = None


def parse_timestamp(value: str) -> float:
    """Epoch seconds from ISO 8601 (naive means UTC) or a plain number."""
    text = value.strip()
    if not text:
        raise ValueError("empty timestamp")
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _optional_float(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    return float(value)


def _optional_str(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def read_canonical(lines: Iterable[str], source: str = "<input>") -> Iterator[Transaction]:
    """Parse canonical CSV text; a bad row raises with its line number."""
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise TransactionFormatError(f"{source}: missing column(s) {', '.join(missing)}")
    for row in reader:
        try:
            quantity = _optional_float(row.get("quantity"))
            yield Transaction(
                customer_id=row["customer_id"].strip(),
                basket_id=row["basket_id"].strip(),
                timestamp=parse_timestamp(row["timestamp"]),
                product_id=row["product_id"].strip(),
                quantity=1.0 if quantity is None else quantity,
                price=_optional_float(row.get("price")),
                category=_optional_str(row.get("category")),
                store_id=_optional_str(row.get("store_id")),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise TransactionFormatError(f"{source}:{reader.line_num}: {exc}") from exc


def load_canonical(path: str | Path) -> list[Transaction]:
    """Read a canonical transactions CSV file."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(read_canonical(handle, source=str(path)))


def write_canonical(rows: Iterable[Transaction], handle: io.TextIOBase | io.StringIO) -> int:
    """Write rows as canonical CSV (ISO timestamps); returns the row count."""
    writer = csv.writer(handle)
    writer.writerow(CANONICAL_COLUMNS)
    count = 0
    for t in rows:
        writer.writerow(
            [
                t.customer_id,
                t.basket_id,
                datetime.fromtimestamp(t.timestamp, tz=UTC).isoformat(),
                t.product_id,
                f"{t.quantity:g}",
                "" if t.price is None else f"{t.price:g}",
                t.category or "",
                t.store_id or "",
            ]
        )
        count += 1
    return count


TAFENG_MEMBER = "ta_feng_all_months_merged.csv"


def read_tafeng(lines: Iterable[str]) -> Iterator[Transaction]:
    """Raw Ta-Feng rows → canonical rows.

    A basket is a customer-day (the raw file has no time of day). ``SALES_PRICE`` is the
    line's value, so the unit price is ``SALES_PRICE / AMOUNT``. ``PIN_CODE`` (residence
    area) stands in for the store, which the raw file does not have.
    """
    reader = csv.DictReader(lines)
    for row in reader:
        month, day, year = row["TRANSACTION_DT"].split("/")
        stamp = datetime(int(year), int(month), int(day), tzinfo=UTC)
        amount = float(row["AMOUNT"] or 1)
        sales = _optional_float(row.get("SALES_PRICE"))
        customer = row["CUSTOMER_ID"].strip()
        yield Transaction(
            customer_id=customer,
            basket_id=f"{customer}-{stamp.strftime('%Y%m%d')}",
            timestamp=stamp.timestamp(),
            product_id=row["PRODUCT_ID"].strip(),
            quantity=amount,
            price=None if sales is None or amount <= 0 else sales / amount,
            category=_optional_str(row.get("PRODUCT_SUBCLASS")),
            store_id=_optional_str(row.get("PIN_CODE")),
        )


def load_tafeng(path: str | Path) -> list[Transaction]:
    """Read the raw Ta-Feng file (the zip as shipped, or the extracted CSV)."""
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive, archive.open(TAFENG_MEMBER) as raw:
            return list(read_tafeng(io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(read_tafeng(handle))
