"""Camera-like frames with a QR code in them, built with OpenCV's own encoder."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.qr_text import qr_modules  # one pixel per module, error correction M

Image = NDArray[np.uint8]
BACKGROUND = 170  # a grey counter top around the phone screen
QUIET_ZONE = 4  # modules of white around the code, as a phone app draws it


def qr_frame(
    text: str,
    *,
    module_px: int = 6,
    size: tuple[int, int] = (1280, 720),
    angle: float = 0.0,
    blur_sigma: float = 0.0,
    cover_corner: float = 0.0,
) -> Image:
    """A ``size`` (w, h) BGR frame with the code in the middle.

    ``cover_corner``: fraction of the code's side covered by a black bar over its bottom
    right corner (the corner without a finder pattern), e.g. a thumb on the screen.
    """
    modules = qr_modules(text)
    side = modules.shape[0] * module_px
    code = cv2.resize(modules, (side, side), interpolation=cv2.INTER_NEAREST)
    if cover_corner:
        bar = int(side * cover_corner)
        code[side - bar // 2 :, side - bar :] = 0
    pad = QUIET_ZONE * module_px
    code = cv2.copyMakeBorder(code, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    if angle:
        code = _rotate(code, angle)
    width, height = size
    frame = np.full((height, width), BACKGROUND, np.uint8)
    y, x = (height - code.shape[0]) // 2, (width - code.shape[1]) // 2
    if x < 0 or y < 0:
        raise ValueError("the code does not fit in the frame: smaller module_px")
    frame[y : y + code.shape[0], x : x + code.shape[1]] = code
    if blur_sigma:
        frame = cv2.GaussianBlur(frame, (0, 0), blur_sigma)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def _rotate(image: Image, angle: float) -> Image:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[0, 2] += new_w / 2 - w / 2
    matrix[1, 2] += new_h / 2 - h / 2
    return cv2.warpAffine(image, matrix, (new_w, new_h), borderValue=BACKGROUND)


def encode(image: Image, ext: str = ".jpg") -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def no_qr_frame(size: tuple[int, int] = (1280, 720)) -> Image:
    """A busy frame with no code: shelves, labels, noise."""
    rng = np.random.default_rng(7)
    width, height = size
    frame = rng.integers(90, 200, (height, width, 3), dtype=np.uint8)
    for i in range(12):
        x, y = int(rng.integers(0, width - 200)), int(rng.integers(0, height - 120))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(frame, (x, y), (x + 180, y + 100), color, -1)
        cv2.putText(frame, f"SHELF {i}", (x + 10, y + 60), cv2.FONT_HERSHEY_SIMPLEX, 1,
                    (255, 255, 255), 2)
    return frame
