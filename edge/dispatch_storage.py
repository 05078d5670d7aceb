"""The dispatcher's retry after the disk refused a write (a mixin of ``edge.dispatch``).

Split out only to keep the dispatcher's file small; the why is in ``edge.dispatch`` and
``edge.storage_faults``. The worker thread alone runs these methods.
"""

from __future__ import annotations

import logging
import time

from edge.messages import Inbound
from edge.storage_faults import StorageHealth, storage_error

logger = logging.getLogger("edge.dispatch")

RETRY_INITIAL_S = 0.25  # first retry after the disk refused a write, doubling up to
RETRY_MAX_S = 5.0


class StorageRetry:
    """Parked QoS 1 items and the retry timer; the dispatcher provides the rest."""

    storage: StorageHealth | None
    _parked: list[Inbound]
    _retry_at: float | None
    _retry_delay: float

    def _commit(self, final: bool = False) -> bool:
        raise NotImplementedError

    def _handle(self, inbound: Inbound) -> None:
        raise NotImplementedError

    def _mark_unflushed(self) -> None:
        raise NotImplementedError

    def _storage_failed(self, exc: BaseException, what: str) -> bool:
        """True if ``exc`` is the disk refusing a write: counted, retry armed."""
        reason = storage_error(exc)
        if reason is None:
            return False
        if self.storage is not None:
            self.storage.failed(reason, what)
        self._arm_retry()
        return True

    def _arm_retry(self) -> None:
        if self._retry_at is None:
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)

    def _retry_stalled(self) -> None:
        """The retry after a refused write: probe, held rows and acks, parked items."""
        self._retry_at = None
        try:
            writable = self.storage is None or self.storage.probe()
        except Exception:  # e.g. the store is closing: try again later
            logger.exception("storage probe failed")
            writable = False
        if not writable:
            self._arm_retry()
            return
        if not self._commit():
            return
        parked, self._parked = self._parked, []
        for index, inbound in enumerate(parked):
            if self._retry_at is not None:  # refused again: the rest keep their order
                self._parked.extend(parked[index:])
                return
            self._handle(inbound)
            self._mark_unflushed()
        if self._retry_at is None and not self._parked:
            self._retry_delay = RETRY_INITIAL_S
            if self.storage is not None:
                self.storage.recovered()

    @property
    def parked(self) -> int:
        """QoS 1 items waiting un-acked for the disk (status page)."""
        return len(self._parked)
