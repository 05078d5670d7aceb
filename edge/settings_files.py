"""The files and folders the settings name, checked before the service starts.

``--check-config`` is the unit's ``ExecStartPre`` and runs as the service user: a password
file the installer left root-only, a CA path with a typo or a keys folder that does not
exist would otherwise surface later, as a refused broker login or as every check-in token
refused, in front of customers. Only settings that are set are checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.settings import EdgeSettings


def _named_paths(settings: EdgeSettings) -> list[tuple[str, Path | None, bool]]:
    """(setting, path, is a folder)."""
    return [
        ("mqtt.password_file", settings.mqtt.password_file, False),
        ("mqtt.tls_ca_file", settings.mqtt.tls_ca_file, False),
        ("mqtt.tls_cert_file", settings.mqtt.tls_cert_file, False),
        ("mqtt.tls_key_file", settings.mqtt.tls_key_file, False),
        ("tokens.public_keys_dir", settings.tokens.public_keys_dir, True),
        ("ranking.bundle_dir", settings.ranking.bundle_dir, True),
        ("hub.store_key_file", settings.hub.store_key_file, False),
        ("models.public_keys_dir", settings.models.public_keys_dir, True),
    ]


def unreadable_paths(settings: EdgeSettings) -> list[str]:
    """One line per configured file or folder this process cannot use, naming the setting."""
    problems = []
    for name, path, is_dir in _named_paths(settings):
        if path is None:
            continue
        if is_dir and not path.is_dir():
            problems.append(f"{name}: {path} is not a folder")
        elif not is_dir and not path.is_file():
            problems.append(f"{name}: {path} is not a file")
        elif not os.access(path, os.R_OK | (os.X_OK if is_dir else 0)):
            problems.append(f"{name}: {path} is not readable by this user")
    return problems
