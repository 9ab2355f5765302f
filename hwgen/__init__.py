"""hwgen: compile trained neural networks (ONNX) into compressed, bit-exact FPGA accelerators."""

__version__ = "0.1.0"
