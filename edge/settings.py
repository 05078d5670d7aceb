"""Edge settings: one TOML file + ``STORESIDE_EDGE_*`` environment, validated once.

Unknown keys are rejected in both places: a typo in a store's config must stop the
service at start-up (``storeside-edge --check-config``), not silently fall back to a
default in front of customers. Environment wins over the file so an installer can
override one value (``STORESIDE_EDGE_MQTT__PORT=1884``) without editing it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import SettingsConfigDict

from edge.rules import RulesConfig
from edge.topics import DEFAULT_PREFIX, Topics
from edge.visit import VisitConfig
from models.settings_base import ENV_NESTED, LayeredSettings, SettingsError, load_layered
from models.settings_base import Section as _Section

ENV_PREFIX = "STORESIDE_EDGE_"
__all__ = ["EdgeSettings", "SettingsError", "load_settings"]

T = TypeVar("T")


def _strict_dataclass(cls: type[T]) -> BeforeValidator:
    """Validate a mapping into a frozen config dataclass, refusing unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def convert(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a table for {cls.__name__}")
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(unknown)}")
        defaults = cls()
        return cls(**{key: _coerce(getattr(defaults, key), val) for key, val in value.items()})

    return BeforeValidator(convert)


def _coerce(default: Any, value: Any) -> Any:
    """A file gives typed values, the environment strings ("21,8" for a pair)."""
    if isinstance(default, tuple):
        items = value.strip("[]() ").split(",") if isinstance(value, str) else value
        return tuple(type(d)(v) for d, v in zip(default, items, strict=True))
    return type(default)(value)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None  # default: storeside-edge-<store>
    topic_prefix: str | None = None  # default: storeside/{chain}/{store}
    keepalive_s: int = Field(30, ge=5, le=600)
    session_expiry_s: int = Field(86_400, ge=0)
    queue_size: int = Field(10_000, ge=10, le=1_000_000)
    max_payload_bytes: int = Field(16_384, ge=256, le=1_048_576)
    # The hardened store broker (deploy/mosquitto, edge.mqtt_tls): TLS verified against the
    # store CA, and a password, best read from a file of its own (0640 root:storeside).
    username: str | None = None
    password: str | None = Field(None, repr=False)
    password_file: Path | None = None
    tls_ca_file: Path | None = None  # set = TLS; the broker's name must be in its SANs
    tls_cert_file: Path | None = None  # optional client certificate (the store broker
    tls_key_file: Path | None = None  # does not ask for one)
    # Written (unprivileged) when a profile feed page brings members this edge did not hold;
    # deploy/systemd/storeside-mqtt-passwd.path rebuilds the broker's password file on it,
    # so a first-time visitor's app can log in seconds after the hub issued its token.
    members_changed_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("mqtt: set password or password_file, not both")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("mqtt: tls_cert_file and tls_key_file go together")
        return self


class TokenSettings(_Section):
    public_keys_dir: Path | None = None  # <kid>.pub PEM files from the hub
    issuer: str = "storeside-hub"
    leeway_s: float = Field(30.0, ge=0, le=600)


class RankingSettings(_Section):
    bundle_dir: Path | None = None  # default: the bundle shipped in models/default_bundle
    intra_op_threads: int = Field(1, ge=1, le=8)
    history_max_baskets: int = Field(50, ge=1, le=1000)
    rules_pool: int = Field(40, ge=5, le=500)  # best-scored candidates the rules choose from
    stats_window_days: int = Field(120, ge=1, le=3650)
    stats_refresh_s: float = Field(300.0, ge=1)


class HubLinkSettings(_Section):
    """The link to the chain's hub (issue 5). ``hub_url`` None = standalone: no sync threads.

    Offline-first: the store serves from its own SQLite whatever the hub does; these values
    only decide how eagerly it catches up. ``store_key`` is a secret (``--check-config``
    masks it, ``repr`` hides it); it is required as soon as a hub is configured.
    """

    hub_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    store_key: str | None = Field(None, repr=False, min_length=8)
    # Or a file holding the key (0600), re-read when it changes: a rotated key
    # (storeside-hub rotate-store-key) is picked up without a restart (edge.store_key).
    store_key_file: Path | None = None
    poll_interval_s: float = Field(2.0, gt=0, le=3600)  # feeds, erasures, JWKS, heartbeat
    push_interval_s: float = Field(1.0, gt=0, le=3600)  # outbox → hub
    batch_size: int = Field(500, ge=1, le=1000)  # events per POST (the hub takes <= 1000)
    feed_page_size: int = Field(1000, ge=1, le=5000)  # items per feed page (one transaction)
    backoff_initial_s: float = Field(1.0, gt=0, le=600)
    backoff_max_s: float = Field(15.0, gt=0, le=3600)  # bounds the wait after an outage
    backoff_jitter: float = Field(0.2, ge=0, le=1)  # fraction of a delay drawn at random
    timeout_s: float = Field(5.0, gt=0, le=120)
    stale_after_s: float = Field(300.0, gt=0)  # a feed not refreshed this long is stale
    announce_queue: int = Field(1000, ge=1, le=100_000)  # pending geofence announces

    @model_validator(mode="after")
    def _key_with_url(self) -> HubLinkSettings:
        if self.hub_url is not None and not self.store_key and self.store_key_file is None:
            raise ValueError("hub.store_key is required when hub.hub_url is set (or "
                             "hub.store_key_file)")
        if self.store_key and self.store_key_file is not None:
            raise ValueError("hub: set store_key or store_key_file, not both")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("hub.backoff_max_s must be >= hub.backoff_initial_s")
        return self

    @property
    def enabled(self) -> bool:
        return self.hub_url is not None


class TabletSettings(_Section):
    """Staff tablets (issue 3): the device cookie and the QR check-in upload limits."""

    cookie_name: str = Field("storeside_tablet", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    cookie_max_age_s: int = Field(400 * 86_400, ge=60, le=400 * 86_400)  # browsers cap 400 d
    device_cache_s: float = Field(0.5, ge=0, le=1.0)  # revocation is seen within this
    qr_max_bytes: int = Field(4_000_000, ge=10_000, le=50_000_000)  # one camera frame
    qr_max_pixels: int = Field(16_777_216, ge=10_000, le=100_000_000)  # decompression bombs
    qr_decode_budget_s: float = Field(0.4, gt=0, le=10)  # per frame; a camera sends many
    pairing_ttl_s: int = Field(600, ge=30, le=7 * 86_400)  # a one-time pairing code's life
    pairing_attempts_per_min: int = Field(10, ge=1, le=1000)  # per client address


class ModelUpdateSettings(_Section):
    """Model bundles from the hub (issue 5): where they live, whom to trust, what is good.

    ``public_keys_dir`` holds the hub's *model-signing* public keys (``<kid>.pub`` from
    ``storeside-hub model-keygen``), not the check-in token keys; without it no bundle can
    verify and the edge keeps its model. Updates are polled every ``hub.poll_interval_s``.
    """

    bundles_dir: Path | None = None  # default: "bundles" next to the database
    public_keys_dir: Path | None = None
    latency_budget_ms: float = Field(5.0, gt=0, le=10_000)  # p50 of one model call
    golden_tolerance: float = Field(1e-4, gt=0, le=1)  # max |score - signed score|
    golden_runs: int = Field(15, ge=3, le=1000)  # timed runs of the golden matrix
    probation_rankings: int = Field(20, ge=1, le=100_000)  # live rankings before "active"
    probation_s: float = Field(300.0, gt=0)  # ... or this long, whichever comes first
    max_consecutive_errors: int = Field(3, ge=1, le=1000)  # after probation: roll back
    max_bundle_bytes: int = Field(64 << 20, ge=1024, le=1 << 30)
    keep_bundles: int = Field(3, ge=2, le=50)  # versions kept on disk (active, previous, …)


class RetentionSettings(_Section):
    """How long the edge keeps personal data (edge.retention; docs/privacy.md). A member not
    seen for ``member_days`` is forgotten (the hub's visit relevance window is 90 days);
    events older than ``event_days`` go once the hub acknowledged them (never an un-acked
    outbox row). Deletes run in batches of ``batch_rows`` rows / ``batch_members`` members,
    one short write transaction each."""

    enabled: bool = True
    member_days: float = Field(90.0, gt=0, le=3650)
    event_days: float = Field(30.0, gt=0, le=3650)
    sweep_interval_s: float = Field(3600.0, ge=1, le=7 * 86_400)
    batch_rows: int = Field(500, ge=1, le=100_000)
    batch_members: int = Field(50, ge=1, le=10_000)


class AuthSettings(_Section):
    """Who may call the edge API (issue 6; docs/operations.md, "API auth"). Admin and till
    tokens: ``storeside-edge admin-token``; tablets: pairing codes.

    ``open_on_loopback`` lets requests from the store device itself (127.0.0.1 / ::1, no
    proxy headers) read ``/metrics``, ``/v1/status`` and the full ``/readyz`` and post
    ``/v1/pos`` without a token: whoever runs a process there can read the SQLite file and
    mint a token anyway. Turn it off when a reverse proxy on the same device forwards outside
    traffic (the deploy example does, and gives the scraper a token).
    """

    open_on_loopback: bool = True
    key_cache_s: float = Field(0.5, ge=0, le=1.0)  # a CLI revoke is seen within this
    # After POST /v1/devices/rotate the tablet's previous token keeps working this long.
    device_rotation_grace_s: float = Field(60.0, ge=0, le=3600)


class RateLimitSettings(_Section):
    """Per-caller limits (token buckets, models.ratelimit); over a limit: HTTP 429 with
    Retry-After, or a ``rate_limited`` dead letter for MQTT, counted in
    ``storeside_rate_limited_total{endpoint}``."""

    checkin_per_min: float = Field(120.0, gt=0)  # HTTP check-ins per client address
    checkin_burst: int = Field(30, ge=1)  # a queue at the kiosk
    subject_checkins_per_min: float = Field(6.0, gt=0)  # per member, MQTT and HTTP alike
    auth_failures_per_min: float = Field(30.0, gt=0)  # bad tokens per client address
    # The store device's own processes (a local kiosk bridge, tests) are not limited by
    # address; the per-member limit applies to everyone.
    exempt_loopback: bool = True


class EdgeSettings(LayeredSettings):
    """Everything one store's edge needs; see docs/operations.md for each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED, extra="forbid", frozen=True,
        hide_input_in_errors=True,  # errors must not echo secrets (hub.store_key, passwords)
    )

    chain: str = Field("demo", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    store: str = Field("store-001", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    timezone: str = "UTC"
    db_path: Path = Path("var/edge.db")
    http: HttpSettings = HttpSettings()
    mqtt: MqttSettings = MqttSettings()
    tokens: TokenSettings = TokenSettings()
    ranking: RankingSettings = RankingSettings()
    visit: Annotated[VisitConfig, _strict_dataclass(VisitConfig)] = VisitConfig()
    rules: Annotated[RulesConfig, _strict_dataclass(RulesConfig)] = RulesConfig()
    hub: HubLinkSettings = HubLinkSettings()
    models: ModelUpdateSettings = ModelUpdateSettings()
    tablet: TabletSettings = TabletSettings()
    retention: RetentionSettings = RetentionSettings()
    auth: AuthSettings = AuthSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    tick_interval_s: float = Field(1.0, gt=0, le=60)
    gil_switch_interval_s: float = Field(0.0005, gt=0, le=0.1)

    def topics(self) -> Topics:
        return Topics(self.chain, self.store, prefix=self.mqtt.topic_prefix or DEFAULT_PREFIX)

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"storeside-edge-{self.store}"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> EdgeSettings:
    """Read the file (if any), apply the environment, then ``overrides``; validate once."""
    return load_layered(EdgeSettings, ENV_PREFIX, config_file, environ, overrides)
