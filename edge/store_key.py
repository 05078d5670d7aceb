"""The store key the edge sends to the hub: fixed in the settings (``hub.store_key``) or
read from a file (``hub.store_key_file``) that is re-read when it changes, so a rotated key
(``storeside-hub rotate-store-key``) is picked up without a restart.

The file is checked (one ``stat``) before each hub call and re-read when its mtime, size or
inode changed; a 401 from the hub forces a re-read and one retry (a copy tool that keeps the
mtime must not cost a failed push). A file that cannot be read or is empty keeps the last
good key (logged; the key itself never is). ``StoreKeyAuth`` is the ``httpx.Auth`` every
hub link uses, the model downloads included.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Generator
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

MAX_KEY_CHARS = 512


class StoreKeySource:
    """``current()`` → the key to send now (thread-safe: both sync threads share one)."""

    def __init__(self, key: str | None = None, path: Path | None = None) -> None:
        if (key is None) == (path is None):
            raise ValueError("give a store key or a store key file, not both or neither")
        self.path = None if path is None else Path(path)
        self._key = key or ""
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        if self.path is not None and not self.refresh():
            raise ValueError(f"no store key in {self.path}")

    def current(self) -> str:
        if self.path is not None:
            try:
                st = os.stat(self.path)
            except OSError:
                return self._key  # keep the last good key; refresh() logs the problem
            if (st.st_mtime_ns, st.st_size, st.st_ino) != self._seen:
                self.refresh()
        return self._key

    def refresh(self) -> bool:
        """Re-read the file; True when that gave a new key. No-op for a fixed key."""
        if self.path is None:
            return False
        with self._lock:
            try:
                st = os.stat(self.path)
                text = self.path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                logger.warning("cannot read the store key file %s: %s", self.path,
                               type(exc).__name__)
                return False
            self._seen = (st.st_mtime_ns, st.st_size, st.st_ino)
            if not text or len(text) > MAX_KEY_CHARS or any(c.isspace() for c in text):
                logger.warning("store key file %s holds no key; keeping the last one",
                               self.path)
                return False
            if text == self._key:
                return False
            first = not self._key
            self._key = text
        if not first:
            logger.info("store key changed in %s; using the new key", self.path)
        return True


class StoreKeyAuth(httpx.Auth):
    """``Authorization: Bearer <current key>``; on a 401, re-read the key file and retry
    once if that gave a new key."""

    def __init__(self, source: StoreKeySource) -> None:
        self.source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.source.current()}"
        response = yield request
        if response.status_code == 401 and self.source.refresh():
            request.headers["Authorization"] = f"Bearer {self.source.current()}"
            yield request


def key_source(store_key: str | None, store_key_file: Path | None) -> StoreKeySource:
    """The source the hub settings describe (``hub.store_key`` or ``hub.store_key_file``)."""
    return StoreKeySource(store_key, store_key_file)
