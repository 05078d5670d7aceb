"""The edge's one MQTT connection (paho-mqtt 2, MQTT 5), kept thin on purpose.

The network thread only routes a delivery to a handler kind and hands it to the
consumer (the dispatcher's ``offer``); it never parses, never blocks, never touches
state. What makes the link safe to lose:

* persistent session (Clean Start 0 + Session Expiry Interval): QoS 1 events sent while
  the edge is down or restarting wait at the broker and arrive after reconnect;
* manual acks: a QoS 1 event is PUBACKed only after the worker handled it (durable in
  SQLite), so a crash in between means a redelivery, never a loss; the handlers are
  idempotent by event id;
* Receive Maximum: the broker keeps at most that many un-acked QoS 1 messages in
  flight to us, and the dispatcher reserves that many queue slots for them;
* retained availability on ``<prefix>/status`` with a last will "offline";
* TCP_NODELAY on our socket (paho leaves Nagle on, which adds up to 40 ms on a
  small publish following another one).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.messages import (
    MAX_PAYLOAD_BYTES,
    RECEIVE_MAXIMUM,
    DeadLetter,
    Inbound,
    build_status,
    receive_maximum_for,
)
from edge.messages import build_dead_letter as _build_dead_letter
from edge.metrics import EdgeMetrics
from edge.topics import Topics

logger = logging.getLogger(__name__)

__all__ = ["Inbound", "MqttBridge", "MqttConnectError"]

Consumer = Callable[[Inbound], bool]


class MqttConnectError(ConnectionError):
    """The broker refused us (CONNACK or SUBACK with a failure reason code)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} refused: {reason}")
        self.reason = reason


def _reason_label(reason: ReasonCode | int) -> str:
    name = reason.getName() if isinstance(reason, ReasonCode) else str(reason)
    return name.lower().replace(" ", "_")


def _nodelay(sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # e.g. a unix socket
        logger.debug("TCP_NODELAY not available on %r", sock)


def _encode(payload: Mapping[str, Any] | bytes) -> bytes:
    """Compact UTF-8 JSON. orjson: ~1 us for a staff card instead of ~19 us, on the
    check-in's path; it writes a non-finite float as null (json would write invalid
    JSON), and anything orjson refuses (e.g. non-string keys) goes through json."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _QuietStop(logging.Filter):
    """paho 2.2 logs an ERROR ("Client is not connected") from its loop after every
    clean disconnect; on our own stop that is noise, not an incident."""

    def __init__(self, bridge: MqttBridge) -> None:
        super().__init__()
        self._bridge = weakref.ref(bridge)

    def filter(self, record: logging.LogRecord) -> bool:
        bridge = self._bridge()
        if bridge is None or not bridge._stopping:
            return True
        return not str(record.msg).startswith("Client is not conn")


class MqttBridge:
    """Connects, subscribes, hands deliveries to a consumer, acks when told to."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        topics: Topics,
        metrics: EdgeMetrics,
        on_inbound: Consumer | None = None,
        keepalive: int = 30,
        session_expiry_s: int = 86_400,
        receive_maximum: int = RECEIVE_MAXIMUM,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | Callable[[], str | None] | None = None,
        status_fields: Callable[[], Mapping[str, Any]] | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        queue_size: int | None = None,
        max_queued_out: int = 10_000,
    ) -> None:
        if not client_id:
            raise ValueError("a persistent session needs a fixed client_id")
        # The dispatcher must be able to hold every un-acked QoS 1 message.
        receive_maximum = receive_maximum_for(queue_size, receive_maximum)
        if not 1 <= receive_maximum <= 65_535:
            raise ValueError("receive_maximum must be 1..65535")
        self.host, self.port, self.client_id = host, port, client_id
        self.topics = topics
        self.metrics = metrics
        self.receive_maximum = receive_maximum
        self._consumer = on_inbound
        self._keepalive = keepalive
        self._session_expiry_s = session_expiry_s
        # Bigger than the dead-letter limit so "too_large" is still seen and counted,
        # but the broker drops anything absurd before it reaches this device.
        self._max_packet = max(16 * max_payload_bytes, 65_536)
        self._status_fields = status_fields or (lambda: {})
        self._session = 0
        self._stopping = False
        self._started = threading.Event()
        self._refusal: MqttConnectError | None = None
        self._sub_mid: int | None = None
        self._received: dict[str, Any] = {}
        self._dropped: dict[str, Any] = {}

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.suppress_exceptions = True  # a bug in a callback must not kill the loop
        paho_logger = logging.getLogger(f"{__name__}.paho.{client_id}")
        paho_logger.addFilter(_QuietStop(self))
        client.enable_logger(paho_logger)
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(max_queued_out)
        if tls is not None:
            client.tls_set_context(tls)
        # A callable password is read again before every (re)connect: a rotated password
        # (new password file + broker SIGHUP, which drops the old session) is picked up by
        # the reconnect itself, with no restart of the edge.
        self._username = username
        self._password_source = password if callable(password) else None
        if username is not None:
            client.username_pw_set(username, None if callable(password) else password)
        client.on_pre_connect = self._on_pre_connect
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # ------------------------------------------------------------------ public API
    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def set_consumer(self, on_inbound: Consumer) -> None:
        """Late wiring (the dispatcher needs ``bridge.ack``, the bridge its ``offer``)."""
        self._consumer = on_inbound

    def start(self, timeout: float = 10.0) -> None:
        """Connect and wait until subscribed. Raises MqttConnectError when the broker
        refuses (credentials, ACL) and TimeoutError when it cannot be reached in time;
        after a successful start, reconnects happen in the background with backoff."""
        if self._consumer is None:
            raise RuntimeError("no consumer: pass on_inbound or call set_consumer first")
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        props.MaximumPacketSize = self._max_packet
        self._stopping = False
        self._client.connect_async(
            self.host, self.port, self._keepalive, clean_start=False, properties=props
        )
        self._client.loop_start()
        ok = self._started.wait(timeout)
        failure: Exception | None = self._refusal
        if failure is None and not ok:
            failure = TimeoutError(f"no broker session at {self.host}:{self.port} in {timeout}s")
        if failure is not None:
            self._stopping = True
            self._client.disconnect()
            self._client.loop_stop()
            raise failure
        logger.info("mqtt up: %s:%d as %s", self.host, self.port, self.client_id)

    def publish(
        self, topic: str, payload: Mapping[str, Any] | bytes, qos: int = 1, retain: bool = False
    ) -> None:
        """Fire and forget from any thread. QoS 1 survives a reconnect (queued in
        memory, bounded by ``max_queued_out``); QoS 0 is dropped while disconnected."""
        info = self._client.publish(topic, _encode(payload), qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            return  # kept by paho, sent after the reconnect
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.warning("publish to %s not sent: %s", topic, mqtt.error_string(info.rc))

    def ack(self, inbound: Inbound) -> None:
        """PUBACK a QoS 1 delivery once the worker has handled it (Dispatcher on_done).

        Only on the connection that delivered it: after a reconnect the broker resends
        every un-acked message, and the handlers drop the duplicate by event id.
        """
        if inbound.qos == 0 or inbound.session != self._session:
            return
        self._client.ack(inbound.mid, inbound.qos)

    def publish_status(self) -> None:
        """Re-publish the retained status now (e.g. after the model degraded)."""
        self.publish(self.topics.status, self._status("online"), qos=1, retain=True)

    def publish_dead_letter(self, inbound: Inbound, error: DeadLetter) -> None:
        """Dispatcher ``on_dead_letter``: metadata of a reject on ``<prefix>/deadletter``."""
        self.publish(self.topics.dead_letters, _build_dead_letter(inbound, error), qos=0)

    def stop(self, timeout: float = 5.0) -> None:
        """Say "offline" (retained), disconnect cleanly (no will), stop the loop. The
        broker keeps the session, so QoS 1 events keep queueing for the next start."""
        self._stopping = True
        if self._client.is_connected():
            info = self._client.publish(
                self.topics.status,
                _encode(self._status("offline", reason="shutdown")),
                qos=1,
                retain=True,
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                logger.warning("offline status not confirmed before disconnect")
        self._client.disconnect()
        self._client.loop_stop()
        self.metrics.mqtt_connected.set(0)
        self._started.clear()

    # ------------------------------------------------------------------ callbacks
    def _status(self, state: str, **extra: Any) -> dict[str, Any]:
        fields = dict(self._status_fields())
        if state == "online":
            state = fields.pop("state", "online")
        else:
            fields.pop("state", None)
        model_version = fields.pop("model_version", None)
        return build_status(
            state, model_version=model_version, client_id=self.client_id, **fields, **extra
        )

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        if self._username is not None and self._password_source is not None:
            try:
                client.username_pw_set(self._username, self._password_source())
            except (OSError, ValueError) as exc:  # keep the last one; the broker decides
                logger.error("mqtt password could not be read again: %s", exc)
        # Re-armed before every (re)connect so the will carries a fresh timestamp.
        will = self._status("offline", reason="connection_lost")
        client.will_set(self.topics.status, _encode(will), qos=1, retain=True)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        _nodelay(sock)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            label = _reason_label(reason)
            self.metrics.mqtt_connect_failures.labels(label).inc()
            logger.error("broker %s:%d refused the connection: %s", self.host, self.port, reason)
            if not self._started.is_set():
                self._refusal = MqttConnectError("CONNACK", label)
                self._started.set()
            return
        self._session += 1
        self.metrics.mqtt_connected.set(1)
        if not flags.session_present:
            logger.info("new broker session for %s (nothing was queued for us)", self.client_id)
        subs = [
            (topic, SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
            for topic, qos in self.topics.subscriptions()
        ]
        _, self._sub_mid = client.subscribe(subs)
        client.publish(self.topics.status, _encode(self._status("online")), qos=1, retain=True)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            label = "suback_" + _reason_label(refused[0])
            self.metrics.mqtt_connect_failures.labels(label).inc()
            logger.error("broker refused %d of our subscriptions: %s", len(refused), refused[0])
            if not self._started.is_set():
                self._refusal = MqttConnectError("SUBACK", label)
        if mid == self._sub_mid:
            self._started.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.metrics.mqtt_connect_failures.labels("unreachable").inc()
        logger.warning("broker %s:%d unreachable, retrying", self.host, self.port)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.metrics.mqtt_connected.set(0)
        self.metrics.mqtt_disconnects.inc()
        if not self._stopping:
            logger.warning("mqtt connection lost (%s); reconnecting with backoff", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
            routed = self.topics.route(topic)
            kind, subject = routed if routed is not None else ("unknown", None)
            received = self._received.get(kind)
            if received is None:
                received = self._received[kind] = self.metrics.messages_received.labels(kind)
            received.inc()
            inbound = Inbound(
                kind, topic, bytes(message.payload), message.qos, message.mid, time.monotonic(),
                subject, self._session, bool(message.dup),
            )
            consumer = self._consumer
            if consumer is not None and consumer(inbound):
                return
            if message.qos == 0:
                dropped = self._dropped.get(kind)
                if dropped is None:
                    dropped = self._dropped[kind] = self.metrics.queue_dropped.labels(kind)
                dropped.inc()
            else:
                # Only possible when the broker overshoots our Receive Maximum (Mosquitto
                # 2.0.11 does, see docs/mqtt.md). Not acked: resent after a reconnect.
                self.metrics.queue_deferred.labels(kind).inc()
                logger.error("hand-off queue refused QoS %d %s: left un-acked", message.qos, kind)
        except Exception:
            logger.exception("dropping a delivery the bridge could not route")
