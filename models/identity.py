"""Pseudonymous subject ids: the only customer identifier that leaves the CRM.

Shared by the hub (CRM import, check-in tokens) and the edge's demo seeding, so the same
loyalty number maps to the same subject everywhere in a chain. HMAC with a per-chain secret
(not a plain hash): loyalty numbers are short and sequential, so an unkeyed hash could be
reversed by trying them all.
"""

from __future__ import annotations

import hashlib
import hmac
import re

SUBJECT_PATTERN = re.compile(r"^m-[0-9a-f]{16}$")


def pseudonymous_id(customer_id: str, salt: str) -> str:
    """``m-`` + 16 hex of HMAC-SHA256(salt, customer id): stable per chain, not reversible."""
    if not salt:
        raise ValueError("a pseudonymisation salt is required")
    digest = hmac.new(salt.encode(), customer_id.encode(), hashlib.sha256).hexdigest()
    return "m-" + digest[:16]


def is_subject(value: object) -> bool:
    return isinstance(value, str) and SUBJECT_PATTERN.match(value) is not None
