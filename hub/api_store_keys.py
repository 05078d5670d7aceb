"""Store key rotation over HTTP (admin): ``POST /v1/stores/{store}/keys/rotate`` and the
list of a store's keys (fingerprints only). Same as ``storeside-hub rotate-store-key``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hub.context import Ctx, bad_request
from hub.stores import rotate_store_key, store_key_list

router = APIRouter(prefix="/v1/stores/{store}/keys", tags=["stores"])

DEFAULT_OVERLAP_S = 86_400.0


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # how long the previous keys keep working (0: at once, for a leaked key)
    overlap_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = DEFAULT_OVERLAP_S


@router.post("/rotate")
async def rotate(store: str, context: Ctx, body: Rotation | None = None) -> dict[str, Any]:
    """A new key for the store, valid at once (shown once); the previous keys end after
    ``overlap_s``. Deliver it to the store's ``hub.store_key_file``."""
    overlap = (body or Rotation()).overlap_s
    try:
        key, until = await asyncio.to_thread(rotate_store_key, context.db, store, overlap)
    except LookupError as exc:
        raise bad_request(404, "unknown_store", store=store) from exc
    except ValueError as exc:
        raise bad_request(422, "bad_store", detail=str(exc)) from exc
    return {"store": store, "store_key": key, "previous_keys_expire_at": until}


@router.get("")
def keys(store: str, context: Ctx) -> dict[str, Any]:
    """The store's keys, newest first (sha256 fingerprints, never a key)."""
    listed = store_key_list(context.db, store)
    if not listed:
        raise bad_request(404, "unknown_store", store=store)
    return {"store": store, "keys": listed}
