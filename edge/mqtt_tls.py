"""The edge's side of the hardened store broker: a TLS context and the password.

TLS 1.2 at least, the broker's certificate verified against the store CA and its name
(host name or address in the SANs, ``edge.store_certs``); the password comes from the
settings or, better, from a file only root and the ``storeside`` group can read, so the
TOML can be shown (``--check-config``) and copied without a secret in it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from edge.settings import MqttSettings

__all__ = ["client_tls_context", "mqtt_password", "password_source"]


def client_tls_context(mqtt: MqttSettings) -> ssl.SSLContext | None:
    """None without ``tls_ca_file`` (a plain development broker)."""
    if mqtt.tls_ca_file is None:
        return None
    context = ssl.create_default_context(cafile=str(mqtt.tls_ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mqtt.tls_cert_file is not None and mqtt.tls_key_file is not None:
        context.load_cert_chain(str(mqtt.tls_cert_file), str(mqtt.tls_key_file))
    return context


def mqtt_password(mqtt: MqttSettings) -> str | None:
    """The password from the settings or from ``password_file`` (first line, stripped)."""
    if mqtt.password_file is not None:
        lines = mqtt.password_file.read_text().splitlines()
        password = lines[0].strip() if lines else ""
        if not password:
            raise ValueError(f"mqtt.password_file {mqtt.password_file} is empty")
        return password
    return mqtt.password


def password_source(mqtt: MqttSettings) -> str | Callable[[], str | None] | None:
    """What ``MqttBridge`` takes: with a ``password_file``, a function that reads it again
    at every reconnect (rotation without restart), after one read now so that a missing or
    empty file stops the start-up loudly; otherwise the password itself (or None)."""
    if mqtt.password_file is None:
        return mqtt.password
    mqtt_password(mqtt)
    return lambda: mqtt_password(mqtt)
