"""One-time tablet pairing codes: how they look, how a typed one is read back. No I/O.

A pairing code is what a person sees and types (``K7QM-4XPD``), so it is short and made of
characters nobody confuses when reading it off a screen or a chat message: no 0/O, 1/I/L.
Eight of 31 characters are ~40 bits: far more than an attacker can try within a code's
lifetime (minutes) at the edge's per-address attempt limit (``models.ratelimit``), while the
credential the tablet keeps (the device token) stays 256 random bits and is never shown.
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8
GROUP = 4  # shown as two groups of four: K7QM-4XPD
_SEPARATORS = re.compile(r"[\s\-_.]+")


def new_code() -> str:
    """A fresh code in canonical form (upper case, no separator)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(typed: str) -> str | None:
    """The canonical form of what someone typed or a link carried, or None when it cannot
    be a code: case, spaces and dashes do not matter (``k7qm 4xpd`` is ``K7QM4XPD``)."""
    if len(typed) > 4 * CODE_LENGTH:
        return None
    code = _SEPARATORS.sub("", typed).upper()
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def format_code(code: str) -> str:
    """How a code is shown to a person: ``K7QM4XPD`` → ``K7QM-4XPD``."""
    return "-".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))
