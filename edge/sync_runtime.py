"""Wiring of the hub sync into a running edge (only when ``hub.hub_url`` is set).

Kept out of ``edge.runtime`` so that file only says *when* sync starts and stops: here is
*how* it reaches the worker (erasure as a ``dispatcher.call``), the verifier (key swap), the
live cards and the geofence handler (announces).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge.sync import SyncClient
from edge.sync_metrics import SyncMetrics

if TYPE_CHECKING:
    from edge.runtime import EdgeRuntime

FORGET_TIMEOUT_S = 10.0  # an erasure waits this long for the worker, then is retried
HEARTBEAT_FIELDS = ("model_version", "state", "active_visits")
STANDALONE: dict[str, Any] = {"hub_sync": False, "hub_connected": False, "last_sync_at": None,
              "staleness_s": {}, "sync_stale": False, "hub_clock_skew_s": None}


def start_sync(runtime: EdgeRuntime, local_keys: Mapping[str, bytes]) -> SyncClient:
    """Start the sync threads of a running edge; ``local_keys`` are the PEM files of
    ``tokens.public_keys_dir``, always kept beside the hub's keys."""
    settings, service, dispatcher = runtime.settings, runtime.service, runtime.dispatcher
    # httpx logs every request at INFO: a poll every 2 s would bury the edge's own log.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
    # Erasure changes worker-owned state (visit tracker, live cards): run it on the worker,
    # serialised with the events of the same member.
    dispatcher.handlers["forget"] = service.forget

    def forget(subject: str) -> None:
        dispatcher.call("forget", subject, FORGET_TIMEOUT_S)

    def install_keys(hub_keys: Mapping[str, bytes]) -> None:
        service.verifier.replace_keys({**hub_keys, **local_keys})

    def heartbeat_fields() -> dict[str, Any]:
        status = runtime.status()
        return {key: status[key] for key in HEARTBEAT_FIELDS}

    client = SyncClient(
        settings.hub,
        store_id=settings.store,
        store=runtime.store,
        metrics=SyncMetrics(runtime.metrics.registry),
        forget=forget,
        drop_cards=service.live.forget_subject,
        install_keys=install_keys,
        heartbeat_fields=heartbeat_fields,
        edge_clock=service.clock,  # the clock tokens are verified by: its skew to the hub
        skew_warn_s=settings.tokens.leeway_s,
    )
    client.applier.members_changed_file = settings.mqtt.members_changed_file
    service.announce = client.announce
    return client.start()


def sync_status(client: SyncClient | None) -> dict[str, Any]:
    if client is None:
        return dict(STANDALONE)
    return {"hub_sync": True, **client.status()}
