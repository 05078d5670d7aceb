"""Range checks of frozen config dataclasses (edge visit and rules configs), written once.

Pure: no I/O. A config is validated once, in ``__post_init__``, so a bad value in the
settings file stops the process at start-up with the field's name instead of surfacing later
as a silently wrong cap or dwell time. ``not value >= minimum`` also refuses NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def check_fields(
    config: object, names: Iterable[str], *, minimum: float | None = None, finite: bool = False
) -> None:
    """Raise ValueError naming the first field of ``names`` that is below ``minimum`` or,
    with ``finite``, not a finite number."""
    for name in names:
        value = getattr(config, name)
        if finite and not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if minimum is not None and not value >= minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
