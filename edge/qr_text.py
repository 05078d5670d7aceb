"""A QR code as text for a terminal (the pairing link, scanned by the tablet's camera).

OpenCV's ``QRCodeEncoder`` (already a dependency for QR check-in) makes the modules; each
text line carries two module rows with half blocks (▀ ▄ █), so the code stays square in a
terminal whose cells are about twice as high as wide. Light modules are drawn with the
terminal's (light) text colour on its dark background, like ``qrencode -t UTF8``; the
quiet zone around the code is drawn too, as phone scanners need it. No I/O.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

QUIET_ZONE = 4  # modules of light border the QR standard asks for
# (top light, bottom light) → character
_HALF_BLOCKS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}


def qr_modules(text: str) -> NDArray[np.uint8]:
    """One pixel per module (0 dark, 255 light), error correction M (15 %, what phone
    apps use by default), with the encoder's own narrow border."""
    params = cv2.QRCodeEncoder.Params()
    params.correction_level = cv2.QRCodeEncoder_CORRECT_LEVEL_M
    return np.asarray(cv2.QRCodeEncoder.create(params).encode(text), np.uint8)


def terminal_qr(text: str) -> str:
    """``text`` as a QR code made of half-block characters, one line per two module rows."""
    modules = qr_modules(text)
    border = max(0, QUIET_ZONE - _light_border(modules))
    light = np.pad(modules > 127, border, constant_values=True)
    if light.shape[0] % 2:
        light = np.vstack([light, np.ones((1, light.shape[1]), bool)])
    return "\n".join(
        "".join(_HALF_BLOCKS[bool(top), bool(bottom)] for top, bottom in zip(upper, lower,
                                                                             strict=True))
        for upper, lower in zip(light[0::2], light[1::2], strict=True)
    )


def _light_border(modules: NDArray[np.uint8]) -> int:
    """How many all-light rows the encoder already put around the code."""
    n = 0
    while n < modules.shape[0] // 2 and bool((modules[n] > 127).all()):
        n += 1
    return n
