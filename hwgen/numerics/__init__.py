"""Number formats. Every quantized value is an integer code that decodes to an exact dyadic rational.

Families (one module each): fixed point and dynamic fixed point (`fixed`, `dynamic_fixed`),
minifloat (`minifloat`), block floating point (`bfp`), block minifloat (`block_minifloat`), block
logarithm (`block_log`), binary and ternary (`binary`). Each quantized format offers
`encode(x, *, rounding, ...)` -> codes (an int64 array, or a `BlockCodes` with the shared fields),
`decode(codes)` -> (m, e) int64 arrays with value = m * 2**e per element, `to_float`, `quantize`,
`bits` (per element), `storage_bits(shape)`, `dyadic_range()`, `all_codes()` and a canonical `name`
that `parse_format` reads back (grammar in `hwgen.numerics.spec`).

No backend spelling lives here: ap_fixed and Verilog widths are derived in `hwgen.hw`.
"""

from hwgen.numerics.base import BlockCodes, Codes, DyadicRange, QuantFormat
from hwgen.numerics.bfp import BlockFloat
from hwgen.numerics.binary import SCALE_FORMAT, TWN_THRESHOLD, Binary, Ternary
from hwgen.numerics.block_log import BlockLog
from hwgen.numerics.block_minifloat import BlockMinifloat
from hwgen.numerics.dynamic_fixed import FracMethod, fixed_for_tensor
from hwgen.numerics.fixed import FixedPoint, Float32, NumberFormat
from hwgen.numerics.minifloat import Minifloat
from hwgen.numerics.rounding import Overflow, Rounding, round_scaled, saturate, shift_round
from hwgen.numerics.spec import parse_format

#: the formats whose codes carry shared fields (encode returns BlockCodes)
BLOCK_FORMATS = (BlockFloat, BlockMinifloat, BlockLog, Binary, Ternary)

__all__ = [
    "BLOCK_FORMATS",
    "SCALE_FORMAT",
    "TWN_THRESHOLD",
    "Binary",
    "BlockCodes",
    "BlockFloat",
    "BlockLog",
    "BlockMinifloat",
    "Codes",
    "DyadicRange",
    "FixedPoint",
    "Float32",
    "FracMethod",
    "Minifloat",
    "NumberFormat",
    "Overflow",
    "QuantFormat",
    "Rounding",
    "Ternary",
    "fixed_for_tensor",
    "parse_format",
    "round_scaled",
    "saturate",
    "shift_round",
]
