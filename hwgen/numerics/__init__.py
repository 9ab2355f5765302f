"""Number formats. Every quantized value is an integer code that decodes to an exact dyadic rational.

No backend spelling lives here: ap_fixed and Verilog widths are derived in `hwgen.hw`.
"""

from hwgen.numerics.fixed import FixedPoint, Float32, NumberFormat, parse_format
from hwgen.numerics.rounding import Overflow, Rounding, round_scaled, saturate, shift_round

__all__ = [
    "FixedPoint",
    "Float32",
    "NumberFormat",
    "Overflow",
    "Rounding",
    "parse_format",
    "round_scaled",
    "saturate",
    "shift_round",
]
