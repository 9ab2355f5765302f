"""Stream order of tensors: images travel channels last (HWC), vectors in order."""

from __future__ import annotations

import numpy as np


def to_stream_order(codes: np.ndarray) -> np.ndarray:
    """[N, *per-sample shape] (ONNX order) -> [N, elements] in stream order."""
    codes = np.asarray(codes)
    if codes.ndim == 4:  # [N, C, H, W] -> [N, H, W, C]
        codes = codes.transpose(0, 2, 3, 1)
    return codes.reshape(len(codes), -1)


def from_stream_order(stream: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """[N, elements] in stream order -> [N, *shape] in ONNX order."""
    stream = np.asarray(stream)
    n = len(stream)
    if len(shape) == 3:
        c, h, w = shape
        return stream.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return stream.reshape(n, *shape)
