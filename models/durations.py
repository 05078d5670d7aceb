"""Durations as people type them on a command line: ``90s``, ``15m``, ``24h``, ``30d``.
No I/O. Used for token lifetimes (``--expires-in``) and key overlaps (``--overlap``)."""

from __future__ import annotations

import re

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (a bare number is seconds); ``ValueError`` when it is none."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 24h, 30d)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """The largest whole unit that fits exactly: ``86400`` → ``1d``, ``90`` → ``90s``."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{seconds / UNITS[unit]:g}{unit}"
    return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds:g}s"
