"""Importers into the IR: ONNX (float models; QDQ/QONNX quantized models come later)."""

from hwgen.frontend.onnx_import import SUPPORTED_OPS, import_onnx, load_onnx

__all__ = ["SUPPORTED_OPS", "import_onnx", "load_onnx"]
