"""Layered settings (TOML file, then environment, then overrides), shared by edge and hub.

Unknown keys are rejected in both places: a typo in a config must stop the service at
start-up, not silently fall back to a default. Environment wins over the file so an installer
can override one value (``STORESIDE_EDGE_MQTT__PORT=1884``) without editing it. The merge is
done here and validated ONCE with ``model_validate`` (pydantic-settings' own source loading is
switched off), so every process reads its configuration the same way.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

ENV_NESTED = "__"

S = TypeVar("S", bound=BaseSettings)


class SettingsError(ValueError):
    """Configuration that cannot run the service (message names the key)."""


class Section(BaseModel):
    """A settings table: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LayeredSettings(BaseSettings):
    """Base of EdgeSettings / HubSettings: only init values count (``load_layered`` merges)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _from_environment(
    cls: type[BaseSettings], prefix: str, environ: Mapping[str, str]
) -> dict[str, Any]:
    known = set(cls.model_fields)
    for name in environ:
        if not name.startswith(prefix):
            continue
        top = name[len(prefix) :].split(ENV_NESTED, 1)[0].lower()
        if top not in known:
            raise SettingsError(f"unknown setting in environment: {name}")
    source = EnvSettingsSource(cls, env_prefix=prefix, env_nested_delimiter=ENV_NESTED)
    source.env_vars = {k.lower(): v for k, v in environ.items() if k.startswith(prefix)}
    return dict(source())


def load_layered(
    cls: type[S],
    env_prefix: str,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """Read the file (if any), apply the environment, then ``overrides``; validate once."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read {config_file}: {exc}") from exc
    try:
        env = os.environ if environ is None else environ
        data = deep_merge(data, _from_environment(cls, env_prefix, env))
        data = deep_merge(data, overrides or {})
        return cls.model_validate(data)
    except ValueError as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(str(exc)) from exc
