"""The error types users see.

Every message says what happened, where (node, ONNX name and op, or file), why, and what to do.
The CLI prints them as one line and exits with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations


class HwgenError(Exception):
    """Base class of every error hwgen reports to a user."""


class ModelFileError(HwgenError):
    """The model file cannot be read: missing, truncated, not ONNX, or inconsistent."""


class UnsupportedOpError(HwgenError):
    """An ONNX op (or one of its attributes) has no IR equivalent or no hardware engine."""


class FormatError(HwgenError):
    """A number format name or parameter is invalid, or a value does not fit its format."""


class ConfigError(HwgenError):
    """The build configuration (TOML file or CLI flags) is invalid."""


class GraphError(HwgenError):
    """The IR graph is inconsistent (dangling value, shape mismatch, cycle)."""


class ScheduleError(HwgenError):
    """No hardware plan satisfies the request (reuse factor, widths, device resources)."""


class DataError(HwgenError):
    """A calibration or verification data file is missing, malformed, or has the wrong shape."""


class VerificationError(HwgenError):
    """A hardware simulation disagrees with the golden model."""


class ToolError(HwgenError):
    """An external tool (g++, Verilator, Yosys) failed; the message carries the log tail."""
