"""Start-up and shutdown of one edge: the parts, in the order they depend on each other.

Order matters: the store (migrations) before anything reads it, the model and item
statistics before the first event can be ranked, the worker before the broker delivers,
and on the way down the broker first (no new events), then the worker drains, then the
store closes. Nothing here runs at import time.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.dispatch import Dispatcher
from edge.live import LiveHub
from edge.metrics import EdgeMetrics
from edge.model_state import startup_bundle_dir
from edge.model_update import ModelLink, ModelUpdater
from edge.mqtt import MqttBridge
from edge.mqtt_tls import client_tls_context, password_source
from edge.ranking import Ranker
from edge.retention_sweep import RetentionMetrics, RetentionSweeper
from edge.service import CheckinRefused, EdgeService
from edge.settings import EdgeSettings
from edge.storage_faults import StorageHealth
from edge.store import EdgeStore
from edge.store_key import key_source
from edge.sync import SyncClient
from edge.sync_runtime import start_sync, sync_status
from edge.tokens import ReplayGuard, TokenVerifier
from edge.visit import VisitTracker
from edge.visit_restart import VisitCheckpoint, restore_visits
from edge.wal_checkpointer import WalCheckpointer

logger = logging.getLogger(__name__)


def load_public_keys(directory: Path | None) -> dict[str, bytes]:
    """``<kid>.pub`` PEM files published by the hub; no keys means no check-in is valid."""
    if directory is None:
        return {}
    keys = {path.stem: path.read_bytes() for path in sorted(Path(directory).glob("*.pub"))}
    if not keys:
        logger.warning("no public keys in %s: nothing the hub signs (check-in tokens or "
                       "model bundles, whichever this folder is for) will verify", directory)
    return keys


@dataclass
class EdgeRuntime:
    """The running parts of one edge process."""

    settings: EdgeSettings
    metrics: EdgeMetrics
    store: EdgeStore
    ranker: Ranker
    service: EdgeService
    dispatcher: Dispatcher
    bridge: MqttBridge | None
    started_at: float
    model_updater: ModelUpdater | None = None
    sync: SyncClient | None = None  # hub sync threads, when hub.hub_url is set
    visit_checkpoint: VisitCheckpoint | None = None  # open visits' state, for a restart
    wal: WalCheckpointer | None = None  # WAL checkpoints off the worker (edge.wal_checkpointer)
    retention: RetentionSweeper | None = None  # forgets stale members/events (edge.retention)
    storage: StorageHealth | None = None  # a full disk: episode, metrics (edge.storage_faults)

    @classmethod
    def start(
        cls,
        settings: EdgeSettings,
        metrics: EdgeMetrics,
        live: LiveHub,
        *,
        clock: Callable[[], float] = time.time,
        connect_mqtt: bool = True,
    ) -> EdgeRuntime:
        settings.db_path.parent.mkdir(parents=True, exist_ok=True)
        store = EdgeStore(settings.db_path)
        now = clock()
        guard = ReplayGuard(margin_s=max(30.0, settings.tokens.leeway_s))
        guard.load(store.live_tokens(now), now)
        verifier = TokenVerifier(
            load_public_keys(settings.tokens.public_keys_dir),
            chain=settings.chain,
            store=settings.store,
            issuer=settings.tokens.issuer,
            leeway_s=settings.tokens.leeway_s,
            replay_guard=guard,
        )

        def model_keys() -> dict[str, bytes]:
            return load_public_keys(settings.models.public_keys_dir)

        # the last good bundle the hub delivered, else the configured/shipped one
        ranker = Ranker(
            metrics, startup_bundle_dir(settings, model_keys()) or settings.ranking.bundle_dir,
            threads=settings.ranking.intra_op_threads,
        )
        topics = settings.topics()
        bridge: MqttBridge | None = None
        publish = _offline_publish
        if connect_mqtt:
            bridge = MqttBridge(
                host=settings.mqtt.host,
                port=settings.mqtt.port,
                client_id=settings.mqtt_client_id,
                topics=topics,
                metrics=metrics,
                keepalive=settings.mqtt.keepalive_s,
                session_expiry_s=settings.mqtt.session_expiry_s,
                username=settings.mqtt.username,
                password=password_source(settings.mqtt),
                tls=client_tls_context(settings.mqtt),
                max_payload_bytes=settings.mqtt.max_payload_bytes,
                queue_size=settings.mqtt.queue_size,
                status_fields=lambda: {"model_version": ranker.model_version},
            )
            publish = _publisher(bridge)
        service = EdgeService(
            settings,
            store=store,
            ranker=ranker,
            verifier=verifier,
            tracker=VisitTracker(settings.visit),
            live=live,
            metrics=metrics,
            publish=publish,
            clock=clock,
        )
        service.refresh_stats(now)
        # Item statistics and the model are long-lived: move them out of the collector's
        # reach so a full collection does not land in the middle of a visit's ranking.
        gc.collect()
        gc.freeze()
        # Customers in the store before a restart come back (same visit ids, their cards):
        # now, while no worker runs and no broker delivers (edge.visit_restart).
        checkpoint = VisitCheckpoint(store, service.tracker)
        restore_visits(service, checkpoint, clock())
        storage = StorageHealth(metrics.registry, probe=store.probe_write)
        dispatcher = Dispatcher(
            service.handlers(),
            metrics=metrics,
            queue_size=settings.mqtt.queue_size,
            on_done=bridge.ack if bridge is not None else None,
            on_dead_letter=bridge.publish_dead_letter if bridge is not None else None,
            tick=service.tick,
            tick_interval_s=settings.tick_interval_s,
            max_payload_bytes=settings.mqtt.max_payload_bytes,
            rejections=(CheckinRefused,),
            flush=service.flush,
            storage=storage,
        )
        dispatcher.add_tick(checkpoint.tick)
        dispatcher.start()
        if bridge is not None:
            bridge.set_consumer(dispatcher.offer)
            try:
                bridge.start()
            except Exception:
                dispatcher.stop(drain=False)
                store.close()
                raise
        logger.info(
            "edge %s/%s up (model %s)", settings.chain, settings.store,
            ranker.model_version or "none: store-popular lists",
        )
        updater = None
        if settings.hub.enabled and settings.hub.hub_url:
            api = ModelLink(settings.hub.hub_url, store=settings.store,
                            store_key=key_source(settings.hub.store_key,
                                                 settings.hub.store_key_file),
                            timeout_s=settings.hub.timeout_s)
            updater = ModelUpdater(settings, ranker, api, model_keys)
            updater.start()
        runtime = cls(settings, metrics, store, ranker, service, dispatcher, bridge, now,
                      model_updater=updater, visit_checkpoint=checkpoint,
                      wal=WalCheckpointer(store).start(), storage=storage)
        if settings.retention.enabled:  # personal data only while it serves the store
            runtime.retention = RetentionSweeper(
                store, settings.retention, RetentionMetrics(metrics.registry), clock=clock
            ).start()
        if settings.hub.enabled:  # offline-first: serving never waits for the hub
            runtime.sync = start_sync(runtime, load_public_keys(settings.tokens.public_keys_dir))
        return runtime

    def stop(self) -> None:
        # Drain the worker while still connected, so its acks reach the broker; what
        # arrives meanwhile stays un-acked and is redelivered to the next start.
        if self.sync is not None:  # first: its erasures run on the worker
            self.sync.stop()
        if self.model_updater is not None:
            self.model_updater.stop()
        self.dispatcher.stop(drain=True)
        if self.visit_checkpoint is not None:  # the worker is gone: the state as it ends
            try:
                self.visit_checkpoint.flush()
            except Exception:
                logger.exception("last visit checkpoint failed")
        if self.bridge is not None:
            self.bridge.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.wal is not None:
            self.wal.stop()
        self.store.close()
        logger.info("edge stopped")

    def status(self) -> dict[str, Any]:
        connected = self.bridge.connected if self.bridge is not None else False
        return {
            "chain": self.settings.chain,
            "store": self.settings.store,
            "state": "degraded" if self.ranker.bundle is None else "online",
            "mqtt_connected": connected,
            "model_version": self.ranker.model_version,
            "model_error": self.ranker.degraded_reason,
            "worker_alive": self.dispatcher.running,
            "queue_depth": self.dispatcher.depth,
            "events_waiting_for_disk": self.dispatcher.parked,
            **(self.storage.status() if self.storage is not None else {}),
            "outbox_pending": self.store.reader().outbox_count(),
            "active_visits": len(self.service.tracker.active()),
            "uptime_s": round(time.time() - self.started_at, 1),
            "model_update": self.model_updater.status() if self.model_updater else None,
            **sync_status(self.sync),
        }


def _offline_publish(topic: str, payload: dict[str, Any], qos: int, retain: bool) -> None:
    logger.debug("no broker: %s not published", topic)


def _publisher(bridge: MqttBridge) -> Callable[[str, dict[str, Any], int, bool], None]:
    def publish(topic: str, payload: dict[str, Any], qos: int, retain: bool) -> None:
        bridge.publish(topic, payload, qos=qos, retain=retain)

    return publish
