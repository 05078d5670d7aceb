"""The one way both services answer a caller over a rate limit (``models.ratelimit``).

429 with the seconds to wait, twice: ``Retry-After`` for HTTP clients and proxies, and
``retry_after_s`` in the body beside the reason, which is what our apps and tablets read.
Never below one second: ``Retry-After: 0`` invites an immediate retry loop.
"""

from __future__ import annotations

import math

from fastapi import HTTPException


def too_many(wait_s: float, reason: str = "rate_limited") -> HTTPException:
    retry = max(1, math.ceil(wait_s))
    return HTTPException(429, {"reason": reason, "retry_after_s": retry},
                         headers={"Retry-After": str(retry)})
