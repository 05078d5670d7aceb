"""Checks for what the central team sends: products (JSON or CSV), assortment, stock, stores.

Pure (no I/O). Every refusal is an ``InputError`` naming the reason code, the field and, in a
bulk request, the index of the bad row, so an ERP export with one bad line gets an answer
that points at it instead of a bare 422. A bulk request is refused as a whole: half an
assortment applied would be harder to reason about than none.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PRODUCT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
MAX_BULK = 50_000
MAX_ZONES = 200
CSV_COLUMNS = ("product_id", "name", "category", "price", "brand", "style_id")


class InputError(ValueError):
    """Refused input: ``detail()`` is the body of the 4xx answer."""

    def __init__(self, reason: str, field: str, message: str, index: int | None = None) -> None:
        where = field if index is None else f"[{index}].{field}"
        super().__init__(f"{reason}: {where}: {message}")
        self.reason = reason
        self.field = field
        self.message = message
        self.index = index

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "field": self.field,
                               "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out

    def at(self, index: int) -> InputError:
        return type(self)(self.reason, self.field, self.message, index)


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    category: str | None
    price: float
    brand: str | None
    # The style (product model) this SKU is a variant of, e.g. one id for every colour of a
    # beanie; None: a style of its own. Stores show one suggestion per style.
    style_id: str | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """One product in one store's assortment; stock None = keep what the store has."""

    product_id: str
    zone: str | None
    stock: int | None


# --------------------------------------------------------------------------- field helpers


def optional_text(doc: Mapping[str, Any], key: str, reason: str, limit: int = 200) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InputError(reason, key, f"must be a non-empty string of at most {limit} chars")
    return value


def required_text(doc: Mapping[str, Any], key: str, reason: str, limit: int = 200) -> str:
    value = optional_text(doc, key, reason, limit)
    if value is None:
        raise InputError(reason, key, "is required")
    return value


def finite_number(value: object, key: str, reason: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(reason, key, f"must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(reason, key, f"must be >= {minimum}, got {value!r}")
    return float(value)


def stock_count(value: object, key: str, reason: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or value != int(value):
        raise InputError(reason, key, f"must be a whole number >= 0, got {value!r}")
    return int(value)


def product_id_of(doc: Mapping[str, Any], reason: str) -> str:
    value = doc.get("product_id")
    if not isinstance(value, str) or not PRODUCT_ID.match(value):
        raise InputError(reason, "product_id", "must match " + PRODUCT_ID.pattern)
    return value


def style_id_of(doc: Mapping[str, Any], reason: str) -> str | None:
    """Optional; spelled like a product id (ERP style codes are)."""
    value = doc.get("style_id")
    if value is None:
        return None
    if not isinstance(value, str) or not PRODUCT_ID.match(value):
        raise InputError(reason, "style_id", "must match " + PRODUCT_ID.pattern)
    return value


def _no_unknown(doc: Mapping[str, Any], allowed: Iterable[str], reason: str) -> None:
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise InputError(reason, unknown[0], "unknown field")


def bulk(items: object, key: str, reason: str) -> list[Mapping[str, Any]]:
    """The list under ``key`` of a bulk body; every element must be an object."""
    if not isinstance(items, list):
        raise InputError(reason, key, "must be a list")
    if len(items) > MAX_BULK:
        raise InputError(reason, key, f"at most {MAX_BULK} items per request")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InputError(reason, "item", "must be an object", index)
    return items


def _each(items: list[Mapping[str, Any]], parse: Any) -> list[Any]:
    """Parse every row, tagging an error with its index; duplicates: the last one wins."""
    out: dict[str, Any] = {}
    for index, item in enumerate(items):
        try:
            row = parse(item)
        except InputError as exc:
            raise exc.at(index) from None
        out.pop(row.product_id, None)
        out[row.product_id] = row
    return list(out.values())


# --------------------------------------------------------------------------- products


def parse_product(doc: Mapping[str, Any]) -> Product:
    _no_unknown(doc, CSV_COLUMNS, "bad_product")
    return Product(
        product_id=product_id_of(doc, "bad_product"),
        name=required_text(doc, "name", "bad_product"),
        category=optional_text(doc, "category", "bad_product", 120),
        price=finite_number(doc.get("price"), "price", "bad_product", minimum=0),
        brand=optional_text(doc, "brand", "bad_product", 120),
        style_id=style_id_of(doc, "bad_product"),
    )


def parse_products(body: object) -> list[Product]:
    """``{"products": [...]}``."""
    if not isinstance(body, Mapping):
        raise InputError("bad_product", "body", "expected {\"products\": [...]}")
    return _each(bulk(body.get("products"), "products", "bad_product"), parse_product)


def parse_products_csv(text: str) -> list[Product]:
    """CSV with a header row naming (a subset of) ``CSV_COLUMNS``; product_id, name and price
    are required. An empty category / brand / style_id cell is "none". Row indexes count
    data rows from 0 (the header is not a row)."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ("product_id", "name", "price") if c not in header]
    if missing:
        raise InputError("bad_csv", "header", f"missing column(s): {', '.join(missing)}")
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise InputError("bad_csv", "header", f"unknown column(s): {', '.join(unknown)}")
    rows: list[Mapping[str, Any]] = []
    for index, raw in enumerate(reader):
        if None in raw:
            raise InputError("bad_csv", "row", "more cells than columns", index)
        row: dict[str, Any] = {k: (v.strip() if isinstance(v, str) and v.strip() else None)
                               for k, v in raw.items()}
        price = row.get("price")
        try:
            row["price"] = float(price) if price is not None else None
        except ValueError:
            raise InputError("bad_product", "price", f"not a number: {price!r}", index) from None
        rows.append(row)
        if len(rows) > MAX_BULK:
            raise InputError("bad_csv", "rows", f"at most {MAX_BULK} rows per import")
    return _each(rows, parse_product)


# --------------------------------------------------------------------------- stores


def parse_store_meta(doc: object) -> tuple[str | None, str, list[str]]:
    """``{"name"?, "timezone", "zones"?}`` → (name, timezone, zones). The timezone's
    existence is checked by the caller (it needs the system's tz database)."""
    if not isinstance(doc, Mapping):
        raise InputError("bad_store", "body", "expected a JSON object")
    _no_unknown(doc, ("name", "timezone", "zones"), "bad_store")
    name = optional_text(doc, "name", "bad_store")
    timezone = required_text(doc, "timezone", "bad_store", 64)
    zones = doc.get("zones", [])
    if not isinstance(zones, list) or len(zones) > MAX_ZONES or not all(
            isinstance(z, str) and z.strip() and len(z) <= 64 for z in zones):
        raise InputError("bad_store", "zones",
                         f"must be a list of at most {MAX_ZONES} names (1..64 chars)")
    if len(set(zones)) != len(zones):
        raise InputError("bad_store", "zones", "zone names must be unique")
    return name, timezone, list(zones)


def parse_assortment(body: object, zones: Iterable[str]) -> list[Listing]:
    """``{"items": [{"product_id", "zone"?, "stock"?}]}``; a zone must be one of the
    store's zones when the store declared any."""
    if not isinstance(body, Mapping):
        raise InputError("bad_assortment", "body", "expected {\"items\": [...]}")
    known = set(zones)

    def parse(doc: Mapping[str, Any]) -> Listing:
        _no_unknown(doc, ("product_id", "zone", "stock"), "bad_assortment")
        zone = optional_text(doc, "zone", "bad_assortment", 64)
        if zone is not None and known and zone not in known:
            raise InputError("unknown_zone", "zone",
                             f"{zone!r} is not one of the store's zones {sorted(known)}")
        stock = doc.get("stock")
        return Listing(product_id_of(doc, "bad_assortment"), zone,
                       None if stock is None else stock_count(stock, "stock", "bad_assortment"))

    return _each(bulk(body.get("items"), "items", "bad_assortment"), parse)


def parse_stock(body: object) -> dict[str, int]:
    """``{"items": [{"product_id", "stock"}]}`` → {product_id: stock}."""
    if not isinstance(body, Mapping):
        raise InputError("bad_stock", "body", "expected {\"items\": [...]}")

    def parse(doc: Mapping[str, Any]) -> Listing:
        _no_unknown(doc, ("product_id", "stock"), "bad_stock")
        return Listing(product_id_of(doc, "bad_stock"), None,
                       stock_count(doc.get("stock"), "stock", "bad_stock"))

    rows = _each(bulk(body.get("items"), "items", "bad_stock"), parse)
    return {row.product_id: row.stock for row in rows}


def parse_product_ids(body: object, reason: str) -> list[str]:
    """``{"product_ids": [...]}`` (removals)."""
    if not isinstance(body, Mapping):
        raise InputError(reason, "body", "expected {\"product_ids\": [...]}")
    ids = body.get("product_ids")
    if not isinstance(ids, list) or len(ids) > MAX_BULK:
        raise InputError(reason, "product_ids", f"must be a list of at most {MAX_BULK} ids")
    for index, pid in enumerate(ids):
        if not isinstance(pid, str) or not PRODUCT_ID.match(pid):
            raise InputError(reason, "product_ids", "invalid product id", index)
    return list(dict.fromkeys(ids))
