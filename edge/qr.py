"""QR check-in: one camera frame (JPEG/PNG bytes) → the text of the QR code in it.

No I/O: the HTTP layer hands bytes in and gets text or a ``QrError`` with a reason code
back. CPU-bound (tens of ms per attempt): callers run it in a worker thread.

Why several attempts: ``cv2.QRCodeDetector`` misses the finder patterns of some dense
codes (a ~430-character JWT is a version 17 code) even in a clean frame, depending on the
code's content; ``cv2.QRCodeDetectorAruco`` finds those, so each image variant is tried
with both. And a tablet camera's frame is often a little out of focus or lit from one
side: a global (Otsu) and a local (adaptive) threshold and an unsharp mask recover most
of those; a 2x upscale helps codes that fill only a small part of the frame. The plain
image goes first, so the common case costs one or two attempts (20-40 ms each).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
from cv2.typing import MatLike

Image = MatLike  # what OpenCV takes and returns (a numpy array at run time)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_DECODE_SIDE = 1920  # larger frames are shrunk first: QR modules stay several px wide
UPSCALE_BELOW = 600  # shorter side under this: also try a 2x upscale (costly on big frames)
# JPEG start-of-frame markers carry the size (C4 = Huffman tables, C8 = reserved, CC = DAC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class QrError(ValueError):
    """A frame that yields no check-in code; ``reason`` is the API's reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def image_kind(data: bytes) -> str | None:
    """'jpeg', 'png' or None, from the magic bytes (the Content-Type may lie)."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file header, without decoding the pixels, so a small
    file that would decompress into gigabytes is refused before OpenCV allocates them."""
    kind = image_kind(data)
    if kind == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if kind == "jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers: no length
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in _SOF_MARKERS:
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return None


def load_frame(data: bytes, max_pixels: int) -> Image:
    """Check and decode one uploaded frame; raises QrError('not_an_image' | 'too_large')."""
    if image_kind(data) is None:
        raise QrError("not_an_image", "expected a JPEG or PNG frame")
    size = image_size(data)
    if size is None:
        raise QrError("not_an_image", "unreadable image header")
    width, height = size
    if width * height > max_pixels:
        raise QrError("too_large", f"{width}x{height} pixels > {max_pixels}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise QrError("not_an_image", "the image could not be decoded")
    return image


def _variants(image: Image) -> Iterator[tuple[str, Image]]:
    longest = max(image.shape[:2])
    if longest > MAX_DECODE_SIDE:
        factor = MAX_DECODE_SIDE / longest
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    yield "plain", image
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    _, otsu = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    yield "otsu", otsu
    yield "adaptive", cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 5
    )
    # unsharp mask, then Otsu: brings back module edges a soft focus smeared
    sharp = cv2.addWeighted(gray, 2.0, cv2.GaussianBlur(gray, (0, 0), 3), -1.0, 0)
    yield "sharpened", cv2.threshold(sharp, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]
    if min(gray.shape) < UPSCALE_BELOW:
        yield "upscaled", cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)


def decode_qr(
    image: Image,
    on_attempt: Callable[[str, bool], None] | None = None,
    budget_s: float | None = None,
) -> str:
    """The text of the first QR code found; QrError('no_qr_code') when there is none.

    ``budget_s``: no new attempt starts after this much time, so a camera streaming frames
    without a code in view costs a bounded share of the device's two cores (the first
    attempt always runs). ``on_attempt(variant, found)`` reports each try (tests)."""
    detectors = (("", cv2.QRCodeDetector()), ("aruco-", cv2.QRCodeDetectorAruco()))
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    attempts = 0
    for name, variant in _variants(image):
        for prefix, detector in detectors:
            if attempts and deadline is not None and time.perf_counter() > deadline:
                raise QrError("no_qr_code", "no readable QR code found within the time budget")
            attempts += 1
            text, _points, _ = detector.detectAndDecode(variant)
            if on_attempt is not None:
                on_attempt(prefix + name, bool(text))
            if text:
                return str(text)
    raise QrError("no_qr_code", "no readable QR code in the frame")
