"""HTTP API for the catalog, store metadata, assortment, stock and each store's catalog feed.

Writes need the admin role (the central team, or the ERP integration holding an admin
token). A store reads its own metadata, assortment and feed with its store key. Bodies are
checked by ``hub.catalog_rows`` so every refusal says which row and field (4xx, never 5xx).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from hub.auth import Allowed
from hub.catalog_rows import (
    InputError,
    parse_assortment,
    parse_product_ids,
    parse_products,
    parse_products_csv,
    parse_stock,
    parse_store_meta,
)
from hub.catalog_store import CatalogStore
from hub.context import Ctx, HubContext, bad_request
from hub.feeds import feed_limit, parse_cursor

router = APIRouter(prefix="/v1", tags=["catalog"])

MAX_PAGE = 5000


async def read_body(request: Request, context: HubContext) -> bytes:
    limit = context.settings.sync.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise bad_request(413, "too_large", max_bytes=limit)
    body = await request.body()
    if len(body) > limit:
        raise bad_request(413, "too_large", max_bytes=limit)
    return body


async def json_body(request: Request, context: HubContext) -> Any:
    """The request's JSON (400 ``bad_json`` if it is not JSON, 413 if too large)."""
    body = await read_body(request, context)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(400, "bad_json", message=str(exc)[:200]) from exc


def refused(exc: InputError) -> HTTPException:
    return HTTPException(422, exc.detail())


def unknown_store(store: str) -> HTTPException:
    return bad_request(404, "unknown_store", store=store)


def page_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise bad_request(422, "bad_limit", max=MAX_PAGE)
    return limit


# ---------------------------------------------------------------------- products


@router.put("/catalog/products")
async def upsert_products(request: Request, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Bulk upsert: JSON ``{"products": [{product_id, name, category?, price, brand?}]}``
    or a CSV body (``Content-Type: text/csv``, header row with those columns)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, context)
    try:
        if kind == "text/csv":
            try:
                text = body.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InputError("bad_csv", "body", "not UTF-8 text") from exc
            products = parse_products_csv(text)
        else:
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise bad_request(400, "bad_json", message=str(exc)[:200]) from exc
            products = parse_products(doc)
    except InputError as exc:
        raise refused(exc) from exc
    return await asyncio.to_thread(CatalogStore(context.db).upsert_products, products)


@router.get("/catalog/products")
def list_products(context: Ctx, _: Allowed, after: str = "", limit: int = 500) -> dict[str, Any]:
    """A page of the catalog by product id; pass the last id as ``after`` for the next."""
    rows = CatalogStore(context.db).products(after, page_limit(limit))
    return {"products": rows, "next_after": rows[-1]["product_id"] if rows else None}


@router.get("/catalog/products/{product_id}")
def get_product(product_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    rows = CatalogStore(context.db).products(product_id=product_id, limit=1)
    if not rows:
        raise bad_request(404, "unknown_product", product_id=product_id)
    return rows[0]


@router.delete("/catalog/products/{product_id}")
def delete_product(product_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Out of the catalog and out of every store (deletes in their catalog feeds)."""
    if not CatalogStore(context.db).delete_product(product_id):
        raise bad_request(404, "unknown_product", product_id=product_id)
    return {"product_id": product_id, "deleted": True}


# ---------------------------------------------------------------------- stores


@router.put("/stores/{store}")
async def put_store(store: str, request: Request, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Store metadata ``{"name"?, "timezone", "zones"?}``; the store must be registered
    (``storeside-hub add-store`` creates it and its key)."""
    try:
        name, timezone, zones = parse_store_meta(await json_body(request, context))
        CatalogStore(context.db).set_store_meta(store, name, timezone, zones)
    except InputError as exc:
        raise refused(exc) from exc
    except LookupError as exc:
        raise unknown_store(store) from exc
    return get_store(store, context, _)


@router.get("/stores/{store}")
def get_store(store: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    meta = CatalogStore(context.db).store_meta(store)
    if meta is None:
        raise unknown_store(store)
    return meta


@router.put("/stores/{store}/assortment")
async def put_assortment(store: str, request: Request, context: Ctx, _: Allowed,
                         replace: bool = False) -> dict[str, Any]:
    """List products in the store: ``{"items": [{product_id, zone?, stock?}]}``. With
    ``?replace=true`` the list is the whole assortment (others are removed). Products must be
    in the catalog; a zone must be one of the store's zones if it declared any."""
    catalog = CatalogStore(context.db)
    meta = catalog.store_meta(store)
    if meta is None:
        raise unknown_store(store)
    try:
        listings = parse_assortment(await json_body(request, context), meta["zones"])
        return await asyncio.to_thread(catalog.set_assortment, store, listings,
                                       replace=replace)
    except InputError as exc:
        raise refused(exc) from exc
    except LookupError as exc:
        raise unknown_store(store) from exc


@router.post("/stores/{store}/assortment/remove")
async def remove_assortment(store: str, request: Request, context: Ctx,
                            _: Allowed) -> dict[str, Any]:
    """``{"product_ids": [...]}`` leave the store (deletes in its catalog feed)."""
    try:
        ids = parse_product_ids(await json_body(request, context), "bad_assortment")
        removed = CatalogStore(context.db).remove_from_assortment(store, ids)
    except InputError as exc:
        raise refused(exc) from exc
    except LookupError as exc:
        raise unknown_store(store) from exc
    return {"removed": removed, "not_listed": len(ids) - removed}


@router.get("/stores/{store}/assortment")
def get_assortment(store: str, context: Ctx, _: Allowed, after: str = "",
                   limit: int = 500) -> dict[str, Any]:
    rows = CatalogStore(context.db).assortment(store, after, page_limit(limit))
    return {"items": rows, "next_after": rows[-1]["product_id"] if rows else None}


@router.put("/stores/{store}/stock")
async def put_stock(store: str, request: Request, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Stock levels ``{"items": [{product_id, stock}]}`` (e.g. the ERP's export; resending
    unchanged levels is free). Products the store does not list come back in ``unknown``."""
    try:
        stock = parse_stock(await json_body(request, context))
        return await asyncio.to_thread(CatalogStore(context.db).set_stock, store, stock)
    except InputError as exc:
        raise refused(exc) from exc
    except LookupError as exc:
        raise unknown_store(store) from exc


@router.get("/stores/{store}/feed/catalog", response_model=None)
def catalog_feed(store: str, context: Ctx, _: Allowed, cursor: str | None = None,
                 limit: int | None = None) -> Response:
    """The store's assortment with stock, price and zone after ``cursor`` (contract)."""
    page = CatalogStore(context.db).catalog_feed(
        store, parse_cursor(cursor), feed_limit(limit, context.settings.sync))
    return page.response()
