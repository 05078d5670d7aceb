"""LightGBM → ONNX (onnxmltools), exporting the raw margin the ranker sorts by.

A ``binary`` booster would be converted as a classifier (probabilities + labels); the ranker
and the calibration both want the raw margin, so the model text is re-labelled as a
regression before conversion: the trees, and therefore the margins, are unchanged. The
parity test (tests/test_bundle.py) holds ONNX and native LightGBM to the same scores.
"""

from __future__ import annotations

import re
from typing import Any

ONNX_OPSET = 15
INPUT_NAME = "input"


def booster_to_onnx(booster: Any, n_features: int) -> bytes:
    """Serialized ONNX model: input ``input`` float32 (N, n_features) → scores (N, 1)."""
    import lightgbm as lgb
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    text = booster.model_to_string()
    text = re.sub(r"^objective=.*$", "objective=regression", text, count=1, flags=re.M)
    text = re.sub(r"^\[objective: .*\]$", "[objective: regression]", text, count=1, flags=re.M)
    plain = lgb.Booster(model_str=text)
    model = onnxmltools.convert_lightgbm(
        plain,
        name="storeside_ranker",
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=ONNX_OPSET,
        zipmap=False,
    )
    return bytes(model.SerializeToString())
