"""Tools to run a hub from Python (tests of every hub part, the demo): ``EmbeddedHub`` serves
``create_app`` with uvicorn in a background thread, ``HubProcess`` runs ``storeside-hub
serve``. Both come with helpers to set up what a test needs: stores and their keys, signing
keys, admin / app tokens (a fresh random pair per hub, hashes put into the settings).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from edge.broker import free_port
from edge.devserver import ServerThread, ServiceProcess, settings_toml
from hub.app import create_app, open_context
from hub.settings import HubSettings
from hub.stores import add_store, token_sha256


def hub_settings(workdir: Path, **overrides: Any) -> tuple[HubSettings, str, str]:
    """Settings for a test hub in ``workdir`` + a fresh (admin_token, app_token) pair."""
    admin, app = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    values: dict[str, Any] = {
        "db_path": workdir / "hub.db",
        "admin_tokens": (token_sha256(admin),),
        "app_tokens": (token_sha256(app),),
        "tokens": {"keys_dir": workdir / "hub-keys"},
        "http": {"port": free_port()},
    }
    values.update(overrides)
    return HubSettings.model_validate(values), admin, app


def prepare_hub(settings: HubSettings, stores: tuple[str, ...] = ()) -> dict[str, str]:
    """What ``storeside-hub init`` + ``add-store`` do: the DB, a first signing key if there
    is none, and the given stores. Returns ``{store: key}``."""
    context = open_context(settings)
    try:
        if not context.keys.valid_keys():
            context.keys.create_key()
        return {store: add_store(context.db, store) for store in stores}
    finally:
        context.db.close()


class _Clients:
    """Clients with the right bearer token; the class using it provides ``url``."""

    admin_token: str
    app_token: str
    store_keys: dict[str, str]

    def client(self, token: str | None = None, timeout: float = 10.0) -> httpx.Client:
        url: str = self.url  # type: ignore[attr-defined]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def app_backend(self) -> httpx.Client:
        return self.client(self.app_token)

    def store(self, store: str) -> httpx.Client:
        return self.client(self.store_keys[store])


class EmbeddedHub(ServerThread, _Clients):
    """A hub app on 127.0.0.1:<port> in this process. ``workdir`` holds its DB and keys;
    ``stores`` are registered (keys in ``store_keys``) before it starts."""

    name = "hub-http"

    def __init__(self, workdir: Path, *, stores: tuple[str, ...] = (), settings: Any = None,
                 **app_kwargs: Any) -> None:
        if settings is None:
            settings, self.admin_token, self.app_token = hub_settings(workdir)
        else:
            settings, self.admin_token, self.app_token = settings
        self.settings = settings
        self.store_keys = prepare_hub(settings, stores)
        super().__init__(create_app(settings, **app_kwargs), settings.http.port or free_port())

    @property
    def context(self) -> Any:
        return self.app.state.hub


class HubProcess(ServiceProcess, _Clients):
    """A real ``storeside-hub serve`` process (restart / kill tests, the demo)."""

    def __init__(self, workdir: Path, *, stores: tuple[str, ...] = (),
                 settings: tuple[HubSettings, str, str] | None = None,
                 log_level: str = "WARNING") -> None:
        settings_, self.admin_token, self.app_token = settings or hub_settings(workdir)
        self.settings = settings_
        self.store_keys = prepare_hub(settings_, stores)
        self.config = workdir / "hub.toml"
        self.config.write_text(settings_toml(settings_.model_dump(mode="json")))
        argv = ["-m", "hub.cli"] + (["-v"] if log_level == "DEBUG" else [])
        super().__init__([*argv, "serve", "--config", str(self.config)],
                         f"http://127.0.0.1:{settings_.http.port}", workdir / "hub.log")


# ---------------------------------------------------------------------- synthetic load


def synthetic_members_csv(n: int, home_store: str, first: int = 100_000) -> str:
    """A CRM export of ``n`` members (loyalty numbers ``first``..), all consents granted."""
    rows = ["loyalty_number,first_name,tier,home_store,sizes,brands,"
            "consent_personalize,consent_staff_display,consent_app_offers"]
    rows += [f"{first + i},M{i},silver,{home_store},dairy=large,Sunvale,yes,yes,yes"
             for i in range(n)]
    return "\n".join(rows) + "\n"


def synthetic_event_batches(
    subjects: list[str], n_events: int, batch: int = 1000, seed: int = 1,
    now: float | None = None, lines: int = 5,
) -> list[str]:
    """JSON bodies for ``POST /events`` as an edge's outbox sends them: 40 % member baskets
    of ``lines`` lines, 10 % anonymous baskets, 50 % recommendation (impression) events;
    random uuid event ids as the edge makes them."""
    import json
    import random
    import time
    import uuid

    rng = random.Random(seed)
    ts = time.time() if now is None else now
    bodies = []
    for start in range(0, n_events, batch):
        events = []
        for _ in range(min(batch, n_events - start)):
            event_id, draw, subj = uuid.uuid4().hex, rng.random(), rng.choice(subjects)
            if draw < 0.5:
                member = draw < 0.4
                payload = {"v": 1, "event_id": event_id, "ts": ts, "basket_id": f"b{event_id}",
                           "subject": subj if member else None,
                           "lines": [{"product_id": f"p{rng.randint(1, 999)}", "quantity": 1,
                                      "unit_price": 2.5} for _ in range(lines)]}
                events.append({"event_id": event_id, "kind": "pos_basket",
                               "subject": subj if member else None, "payload": payload,
                               "created_at": ts})
            else:
                events.append({"event_id": event_id, "kind": "recommendation", "subject": subj,
                               "created_at": ts, "payload": {"visit_id": "v1", "items": [
                                   {"product_id": "p1", "rank": 1, "score": 0.5}]}})
        bodies.append(json.dumps({"events": events}))
    return bodies
