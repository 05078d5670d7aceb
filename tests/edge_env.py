"""Building blocks for tests that run a whole edge: keys, a seeded store, settings."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.broker import PrivateBroker, free_port
from edge.devices import pair_device
from edge.devtools import EmbeddedEdge
from edge.seed import SeedSummary, seed_store
from edge.settings import (
    EdgeSettings,
    HttpSettings,
    MqttSettings,
    RankingSettings,
    TokenSettings,
)
from edge.store import EdgeStore
from edge.topics import Topics
from edge.visit import VisitConfig
from hub.tokens import (
    SCOPES,
    generate_signing_key,
    mint_checkin_token,
    private_key_pem,
    public_key_pem,
)

CHAIN = "testchain"
STORE = "s001"
KID = "k1"


@dataclass
class EdgeEnv:
    """Everything a test needs to talk to one edge as an app, a till or a tablet would."""

    settings: EdgeSettings
    private_pem: bytes
    seed: SeedSummary
    topics: Topics
    tablet_token: str = ""  # a paired staff tablet (edge.devices)

    @property
    def tablet(self) -> dict[str, str]:
        """Headers of a paired tablet: /v1/visits, /v1/stream, /v1/feedback need them."""
        return {"Authorization": f"Bearer {self.tablet_token}"}

    def token(
        self,
        subject: str,
        scopes: tuple[str, ...] = SCOPES,
        ttl_s: int = 300,
        now: float | None = None,
        private_pem: bytes | None = None,
        store: str = STORE,
        token_id: str | None = None,
    ) -> str:
        return mint_checkin_token(
            private_pem or self.private_pem,
            kid=KID,
            subject=subject,
            chain=CHAIN,
            store=store,
            scopes=scopes,
            ttl_s=ttl_s,
            now=now,
            token_id=token_id,
        )

    def checkin_payload(self, subject: str, **token_kwargs: Any) -> dict[str, Any]:
        return {
            "v": 1,
            "event_id": new_id(),
            "ts": time.time(),
            "token": self.token(subject, **token_kwargs),
        }


def new_id() -> str:
    return uuid.uuid4().hex


def make_env(
    tmp_path: Path,
    tafeng_zip: Path,
    broker_port: int,
    *,
    n_products: int = 300,
    n_members: int = 40,
    consent_mix: bool = False,
    **overrides: Any,
) -> EdgeEnv:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    signing = generate_signing_key()
    (keys / f"{KID}.pub").write_bytes(public_key_pem(signing))
    db = tmp_path / "edge.db"
    store = EdgeStore(db)
    try:
        summary = seed_store(
            store,
            tafeng_zip,
            n_products=n_products,
            n_members=n_members,
            now=time.time(),
            consent_mix=consent_mix,
        )
    finally:
        store.close()
    fields: dict[str, Any] = {
        "chain": CHAIN,
        "store": STORE,
        "db_path": db,
        # a free port of its own: the default 8080 collides with any other edge on the box
        "http": HttpSettings(port=free_port()),
        "mqtt": MqttSettings(port=broker_port, client_id=f"edge-{new_id()[:8]}"),
        "tokens": TokenSettings(public_keys_dir=keys),
        "ranking": RankingSettings(),
        "visit": VisitConfig(zone_min_dwell_s=0.3, exit_grace_s=1.0),
        "tick_interval_s": 0.05,
    }
    fields.update(overrides)
    settings = EdgeSettings(**fields)
    return EdgeEnv(
        settings, private_key_pem(signing), summary, Topics(CHAIN, STORE),
        tablet_token=pair_device(db, "test tablet"),
    )


def edge_fixtures(**make_kwargs: Any) -> tuple[Callable[..., EdgeEnv], Callable[..., Any]]:
    """The ``env`` (a seeded store, ``make_env(**make_kwargs)``, on the session broker) and
    ``edge`` (that env served in-process) fixtures of a test module that runs one edge:
    ``env, edge = edge_fixtures(n_products=120)``."""

    @pytest.fixture()
    def env(tmp_path: Path, tafeng_zip: Path, broker: PrivateBroker) -> EdgeEnv:
        return make_env(tmp_path, tafeng_zip, broker.port, **make_kwargs)

    @pytest.fixture()
    def edge(env: EdgeEnv) -> Iterator[EmbeddedEdge]:
        with EmbeddedEdge(env.settings) as running:
            yield running

    return env, edge
