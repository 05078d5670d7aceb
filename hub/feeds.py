"""Feed paging shared by every hub feed (profiles, erasures, catalog, offers).

A feed row carries the global change sequence number of its last change (``HubDB.next_seq``);
a page is ``seq > cursor ORDER BY seq LIMIT limit + 1`` on an index, read in one snapshot.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Response

from hub.context import bad_request
from hub.settings import SyncSettings
from hub.storage import HubDB


@dataclass(frozen=True, slots=True)
class FeedPage:
    # An item is a dict, or already-serialised JSON text (hot feeds build it cheaper).
    items: list[dict[str, Any] | str]
    cursor: int
    more: bool

    def as_dict(self) -> dict[str, Any]:
        items = [json.loads(i) if isinstance(i, str) else i for i in self.items]
        return {"items": items, "cursor": str(self.cursor), "more": self.more}

    def response(self) -> Response:
        """The page serialised once with ``json.dumps``: FastAPI's generic encoder walks
        every value of a 5000-profile page first and would double its cost."""
        items = ",".join(
            i if isinstance(i, str) else json.dumps(i, separators=(",", ":")) for i in self.items
        )
        more = "true" if self.more else "false"
        body = f'{{"items":[{items}],"cursor":"{self.cursor}","more":{more}}}'
        return Response(body, media_type="application/json")


def feed_page(conn: sqlite3.Connection, rows: Sequence[Any], cursor: int, limit: int,
              item: Callable[[Any], dict[str, Any] | str]) -> FeedPage:
    """Turn ``limit + 1`` rows (seq first) read in one snapshot into a page.

    When the page is the last one the cursor jumps to the hub's current sequence (read in the
    same snapshot, so nothing at or below it can still appear): a store's cursor then tells
    how far behind the hub it is, not when its own last change happened.
    """
    more = len(rows) > limit
    page = rows[:limit]
    next_cursor = int(page[-1][0]) if more else max(cursor, HubDB.current_seq(conn))
    return FeedPage([item(row) for row in page], next_cursor, more)


def parse_cursor(cursor: str | None) -> int:
    """The decimal cursor of the contract ("0" = from the start); 422 bad_cursor otherwise."""
    text = "0" if cursor in (None, "") else str(cursor)
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise bad_request(422, "bad_cursor", cursor=text[:40])
    return int(text)


def feed_limit(limit: int | None, cfg: SyncSettings) -> int:
    """``limit`` query parameter: default ``feed_default_limit``, 1..``feed_max_limit``."""
    if limit is None:
        return cfg.feed_default_limit
    if not 1 <= limit <= cfg.feed_max_limit:
        raise bad_request(422, "bad_limit", max=cfg.feed_max_limit)
    return limit
