"""A store broker as shipped (TLS, passwords, ACL), with certificates made at test time."""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass

from edge.broker_config import StoreBroker
from edge.mqtt_passwords import SERVICE_USERS, app_password, password_file
from edge.store_certs import build_store_certs, write_store_certs


@dataclass
class StoreBrokerEnv:
    broker: StoreBroker
    secret: bytes
    services: dict[str, str]  # service user -> password
    subjects: list[str]

    @property
    def ca_file(self) -> str:
        return str(self.broker.ca_file)

    def password(self, user: str) -> str:
        return self.services.get(user) or app_password(self.secret, user)

    def passwords(self) -> dict[str, str]:
        return {user: self.password(user) for user in [*self.services, *self.subjects]}

    def rewrite_passwd(self) -> None:
        text, _ = password_file(self.secret, self.services, self.subjects)
        self.broker.write_passwd(text)

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def store_broker_env(subjects: list[str]) -> StoreBrokerEnv:
    """Certificates and a password file in a new StoreBroker's dir; ``with env.broker``
    starts it (and stops and removes it)."""
    broker = StoreBroker()
    certs = build_store_certs("s001", hostnames=["store-s001.local"], ips=["127.0.0.1"])
    write_store_certs(certs, broker.conf_dir / "certs")
    env = StoreBrokerEnv(
        broker, secrets.token_bytes(32),
        {user: secrets.token_urlsafe(24) for user in SERVICE_USERS}, subjects,
    )
    env.rewrite_passwd()
    return env
