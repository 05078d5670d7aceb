"""Hub settings: one TOML file + ``STORESIDE_HUB_*`` environment, validated once.

Same loader as the edge (``models.settings_base``): unknown keys in the file or the
environment stop the hub at start-up. Secrets are never stored in clear: ``admin_tokens`` and
``app_tokens`` are sha256 hex digests of the bearer tokens (``storeside-hub hash-token``), so
the config file can be read by operators without handing out access.

Other hub parts add their own section class and one field here (catalog, models).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_settings import SettingsConfigDict

from models.settings_base import ENV_NESTED, LayeredSettings, Section, SettingsError, load_layered

ENV_PREFIX = "STORESIDE_HUB_"
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"

__all__ = ["HubSettings", "SettingsError", "load_settings"]


def _sha256_hex(value: str) -> str:
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("must be a sha256 hex digest (64 hex chars), not the token itself")
    return value


Sha256Hex = Annotated[str, AfterValidator(_sha256_hex)]


class HubHttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)


class TokenIssueSettings(Section):
    """Check-in tokens the hub signs for the app backend, and the keys that sign them."""

    keys_dir: Path = Path("var/hub-keys")  # <kid>.key (0600) + <kid>.pub
    ttl_s: int = Field(300, ge=10, le=3600)  # the edge refuses lifetimes above 1 h
    # After `rotate-keys` the previous key stays in the JWKS this long, so edges that have
    # not polled yet and tokens already issued keep working; then it is retired.
    rotation_overlap_s: float = Field(86_400.0, ge=0)


class RelevanceSettings(Section):
    """Which members a store's profile feed carries (see docs/hub.md)."""

    visit_window_days: float = Field(90.0, gt=0)
    announce_window_h: float = Field(24.0, gt=0)
    history_max_baskets: int = Field(50, ge=1, le=1000)


class SyncSettings(Section):
    feed_default_limit: int = Field(500, ge=1)
    feed_max_limit: int = Field(5000, ge=1)
    max_events_per_batch: int = Field(1000, ge=1, le=10_000)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class CatalogSettings(Section):
    """Offers feed upkeep (see docs/hub.md, "Offers and segments")."""

    # A store's offer targets (segment members, expiries, new stores) are re-derived before
    # serving its offers feed when the last run is older than this.
    offers_refresh_s: float = Field(60.0, ge=0)


class HubRetentionSettings(Section):
    """How long the hub keeps event history, purchase lines and presence (hub.retention;
    docs/privacy.md, "Hub"). Presence is never swept before the relevance windows ran out
    (a shorter ``presence_days`` is raised to them). Consent history and erasure records are
    kept for good (legal proof)."""

    enabled: bool = True  # the sweep thread of `serve`; `storeside-hub sweep` runs anyway
    events_days: float = Field(730.0, gt=0, le=36_500)
    purchases_days: float = Field(730.0, gt=0, le=36_500)
    presence_days: float = Field(180.0, gt=0, le=36_500)
    sweep_interval_s: float = Field(3600.0, ge=1, le=7 * 86_400)
    batch_rows: int = Field(1000, ge=1, le=100_000)


class HubModelSettings(Section):
    """Training, evaluation and signing of the chain's ranker (``train-model``, docs/hub.md).

    ``signing_keys_dir`` holds the *model-signing* key (``model-keygen``), never the token
    keys; ``signing_kid`` picks one when there are several. Small trees on purpose: the edge
    scores ~1,000 candidates per visit on one core.
    """

    signing_keys_dir: Path = Path("var/hub-model-keys")
    signing_kid: str | None = None
    holdout_days: float = Field(7.0, gt=0, le=365)  # recent baskets both models must predict
    k: int = Field(10, ge=1, le=100)  # recall@k / NDCG@k decide
    min_gain: float = Field(0.0, ge=0, le=1)  # recall@k the candidate must gain to win
    num_trees: int = Field(20, ge=1, le=500)
    num_leaves: int = Field(15, ge=2, le=255)
    max_queries: int = Field(30_000, ge=100)
    threads: int = Field(2, ge=1, le=64)
    seed: int = 7


class HubRateLimitSettings(Section):
    """Per-caller limits (token buckets, models.ratelimit; over a limit: 429 + Retry-After).
    An app backend mints a token per check-in of any member, so its key's limit is the
    chain's peak check-in rate with room; a member needs a few tokens a minute at most."""

    checkin_tokens_per_subject_per_min: float = Field(6.0, gt=0)
    checkin_tokens_per_app_key_per_min: float = Field(6000.0, gt=0)
    checkin_tokens_app_key_burst: int = Field(1000, ge=1)
    auth_failures_per_min: float = Field(20.0, gt=0)  # bad bearer tokens per client address


class HubMqttSettings(Section):
    """Store-broker credentials for apps (docs/hub.md, "Check-in tokens"): with a seed, a
    check-in token comes with the app's MQTT username and password for that store. The
    file (0600, ``storeside-hub mqtt-seed-init``) is the chain's most powerful MQTT secret:
    every store's app passwords derive from it (``edge.mqtt_passwords.store_secret``)."""

    seed_file: Path | None = None


class HubSettings(LayeredSettings):
    """Everything the central hub needs; see docs/hub.md for each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED, extra="forbid", frozen=True,
        hide_input_in_errors=True,
    )

    chain: str = Field("demo", pattern=ID_PATTERN)
    # HMAC key of the pseudonymous subject ids (models.identity); default: the chain id,
    # which is fine for a demo but guessable — set a secret in production.
    pseudonym_salt: str | None = Field(None, min_length=1)
    db_path: Path = Path("var/hub.db")
    http: HubHttpSettings = HubHttpSettings()
    admin_tokens: tuple[Sha256Hex, ...] = ()
    app_tokens: tuple[Sha256Hex, ...] = ()
    tokens: TokenIssueSettings = TokenIssueSettings()
    relevance: RelevanceSettings = RelevanceSettings()
    sync: SyncSettings = SyncSettings()
    models: HubModelSettings = HubModelSettings()
    catalog: CatalogSettings = CatalogSettings()
    retention: HubRetentionSettings = HubRetentionSettings()
    rate_limits: HubRateLimitSettings = HubRateLimitSettings()
    mqtt: HubMqttSettings = HubMqttSettings()

    @property
    def salt(self) -> str:
        return self.pseudonym_salt or self.chain


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> HubSettings:
    """Read the file (if any), apply the environment, then ``overrides``; validate once."""
    return load_layered(HubSettings, ENV_PREFIX, config_file, environ, overrides)
