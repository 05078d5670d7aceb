"""The edge's HTTP link to the hub: one small class per sync thread, contract paths only.

Two failure kinds, because they call for different reactions: ``HubUnavailable`` (network
error, timeout, 5xx, 429, an answer that is not JSON) means "the hub is not there right now",
so the whole link backs off and the store keeps serving from its cache; ``HubRefused`` (any
other 4xx) means the hub answered and said no, which only that job backs off from (a 404 of
a feed the hub does not serve yet must not stop the outbox). The store key is sent in the
``Authorization`` header only and never logged; it may change while the link is open
(``edge.store_key``: a key file re-read after a rotation).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from edge.store_key import StoreKeyAuth, StoreKeySource

RETRYABLE_STATUS = frozenset({408, 425, 429})


class HubUnavailable(Exception):
    """The hub could not be reached or did not answer usefully; retry with backoff."""


class HubRefused(Exception):
    """The hub answered with a 4xx: ``status`` and its ``reason`` code when it gave one."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class HubLink:
    """Contract calls of one store; not shared between threads (one per sync thread)."""

    def __init__(
        self,
        hub_url: str,
        *,
        store: str,
        store_key: str | StoreKeySource,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self._prefix = f"/v1/stores/{quote(store, safe='')}"
        self._client = httpx.Client(
            base_url=hub_url.rstrip("/"),
            headers={"User-Agent": "storeside-edge"},
            auth=StoreKeyAuth(store_key if isinstance(store_key, StoreKeySource)
                              else StoreKeySource(store_key)),
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def feed(self, path: str, cursor: str, limit: int) -> Any:
        return self._json("GET", f"{self._prefix}/{path}", params={"cursor": cursor,
                                                                   "limit": limit})

    def post_events(self, body: bytes) -> Any:
        return self._json("POST", f"{self._prefix}/events", content=body,
                          headers={"Content-Type": "application/json"})

    def ack_erasure(self, erasure_id: str) -> None:
        self._json("POST", f"{self._prefix}/erasures/{quote(erasure_id, safe='')}/ack")

    def announce(self, subject: str) -> None:
        self._json("POST", f"{self._prefix}/announce", json={"subject": subject})

    def heartbeat(self, beat: dict[str, Any]) -> Any:
        return self._json("POST", f"{self._prefix}/heartbeat", json=beat)

    def jwks(self) -> Any:
        return self._json("GET", "/v1/jwks")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        status = response.status_code
        if status >= 500 or status in RETRYABLE_STATUS:
            raise HubUnavailable(f"{method} {path}: HTTP {status}")
        if status >= 400:
            raise HubRefused(status, _reason(response))
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise HubUnavailable(f"{method} {path}: answer is not JSON") from exc


def _reason(response: httpx.Response) -> str:
    """The ``{"detail": {"reason": ...}}`` code of a refusal, else a generic one."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return "refused"
    if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
        return str(detail["reason"])
    return detail if isinstance(detail, str) else json.dumps(detail)[:80]
