"""Format spec strings: one parser for every family's canonical name.

    float32                                  unquantized
    fixed<8,3>, ufixed<8,8>                  fixed point: bits, fraction bits
    minifloat<e4m3,bias=7,denorm>            bias defaults to 2**(E-1)-1; denorm (default) | nodenorm
    bfp<m7,e8,block=16>                      mantissa magnitude bits, shared exponent bits, block size
    bminifloat<e4m3,b8,block=8,denorm>       element E/M, shared bias bits, block size, denormals
    blog<e7,b8,block=8>                      element exponent bits, shared exponent bits, block size
    binary, binary<channel>, binary<alpha=0.25>     +-alpha: per tensor, per output channel, fixed
    ternary, ternary<channel>, ternary<alpha=0.25>  TWN -alpha/0/+alpha
    scaled<0..255,s=0.0039215688593685627>   imported QDQ/QONNX scale (hwgen.numerics.scaled); per
    scaled<-127..127,s=[0.01;0.02],axis=0>   channel: scales separated by ';', optional zp=, bits=

`parse_format(f.name) == f` for every format.
"""

from __future__ import annotations

import re

from hwgen.errors import FormatError
from hwgen.numerics.bfp import BlockFloat
from hwgen.numerics.binary import Binary, Ternary
from hwgen.numerics.block_log import BlockLog
from hwgen.numerics.block_minifloat import BlockMinifloat
from hwgen.numerics.fixed import FixedPoint, Float32, NumberFormat
from hwgen.numerics.minifloat import Minifloat
from hwgen.numerics.scaled import ScaledInt, container_of

_RANGE_RE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_SPEC_RE = re.compile(r"^([a-z][a-z0-9]*)\s*(?:<(.*)>)?$")
_EM_RE = re.compile(r"^e(\d+)m(\d+)$")
_INT_RE = re.compile(r"^-?\d+$")
_EXAMPLES = (
    "'fixed<8,4>', 'minifloat<e4m3,bias=7,denorm>', 'bfp<m7,e8,block=16>', 'bminifloat<e4m3,b8,block=8,denorm>', "
    "'blog<e7,b8,block=8>', 'binary', 'ternary<channel>', 'scaled<0..255,s=0.0039215688593685627>' or 'float32'"
)


def _bad(spec: str, why: str) -> FormatError:
    return FormatError(f"unknown number format {spec!r} ({why}); expected e.g. {_EXAMPLES}")


def _int(text: str, what: str, spec: str) -> int:
    if not _INT_RE.match(text):
        raise _bad(spec, f"{what} must be an integer, got {text!r}")
    return int(text)


def _options(args: list[str], spec: str, flags: tuple[str, ...], keys: tuple[str, ...], prefixed: tuple[str, ...]):
    """Split args into flags (bare words), key=value pairs and prefixed integers like m7 / e8 / b8."""
    found_flags: list[str] = []
    kv: dict[str, str] = {}
    pre: dict[str, int] = {}
    for a in args:
        if a in flags:
            found_flags.append(a)
        elif "=" in a and a.split("=", 1)[0].strip() in keys:
            k, v = (p.strip() for p in a.split("=", 1))
            kv[k] = v
        elif a[:1] in prefixed and _INT_RE.match(a[1:]):
            pre[a[0]] = int(a[1:])
        else:
            raise _bad(spec, f"unexpected argument {a!r}")
    return found_flags, kv, pre


def _denorm(flags: list[str], spec: str) -> bool:
    if "denorm" in flags and "nodenorm" in flags:
        raise _bad(spec, "give either denorm or nodenorm, not both")
    return "nodenorm" not in flags


def _em(args: list[str], spec: str) -> tuple[int, int, list[str]]:
    m = _EM_RE.match(args[0]) if args else None
    if m is None:
        raise _bad(spec, "the first argument must be eXmY, e.g. e4m3")
    return int(m.group(1)), int(m.group(2)), args[1:]


def _float(text: str, what: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError as err:
        raise _bad(spec, f"{what} must be a number, got {text!r}") from err
    return v


def _scaled(args: list[str], spec: str) -> ScaledInt:
    """scaled<lo..hi,s=S|[S;S;...][,axis=A][,zp=Z][,bits=B,signed|unsigned]> (see hwgen.numerics.scaled)."""
    r = _RANGE_RE.match(args[0]) if args else None
    if r is None:
        raise _bad(spec, "the first argument must be the code range lo..hi, e.g. 0..255")
    lo, hi = int(r.group(1)), int(r.group(2))
    flags, kv, _ = _options(args[1:], spec, ("signed", "unsigned"), ("s", "axis", "zp", "bits"), ())
    if "s" not in kv:
        raise _bad(spec, "scaled needs its scale s=S (or per channel s=[S;S;...])")
    text = kv["s"]
    if text.startswith("[") and text.endswith("]"):
        scale = tuple(_float(t.strip(), "a scale", spec) for t in text[1:-1].split(";"))
    else:
        scale = (_float(text, "the scale", spec),)
    bits, signed = container_of(lo, hi)
    if "bits" in kv:
        bits = _int(kv["bits"], "bits", spec)
        if len(flags) != 1:
            raise _bad(spec, "bits= needs exactly one of signed / unsigned")
        signed = flags[0] == "signed"
    elif flags:
        raise _bad(spec, f"{flags[0]} is only read together with bits=")
    axis, zp = _int(kv.get("axis", "0"), "axis", spec), _int(kv.get("zp", "0"), "zp", spec)
    return ScaledInt(bits, signed, lo, hi, scale, axis, zp)


def parse_format(name: str) -> NumberFormat:
    """The format a spec string names (see module docstring); FormatError with examples otherwise."""
    spec = name.strip()
    m = _SPEC_RE.match(spec)
    if not m:
        raise _bad(name, "not of the form family or family<args>")
    family, inner = m.group(1), m.group(2)
    args = [a.strip() for a in inner.split(",")] if inner is not None and inner.strip() else []
    if family == "float32" and inner is None:
        return Float32()
    if family in ("fixed", "ufixed"):
        if len(args) != 2:
            raise _bad(spec, "fixed point takes <bits,frac>")
        return FixedPoint(_int(args[0], "bits", spec), _int(args[1], "frac", spec), signed=family == "fixed")
    if family == "minifloat":
        e, mb, rest = _em(args, spec)
        flags, kv, _ = _options(rest, spec, ("denorm", "nodenorm"), ("bias",), ())
        bias = _int(kv["bias"], "bias", spec) if "bias" in kv else None
        return Minifloat(e, mb, bias, _denorm(flags, spec))  # type: ignore[arg-type]
    if family == "bfp":
        _, kv, pre = _options(args, spec, (), ("block",), ("m", "e"))
        if "m" not in pre:
            raise _bad(spec, "bfp needs the mantissa width mN")
        return BlockFloat(pre["m"], pre.get("e", 8), _int(kv.get("block", "16"), "block", spec))
    if family == "bminifloat":
        e, mb, rest = _em(args, spec)
        flags, kv, pre = _options(rest, spec, ("denorm", "nodenorm"), ("block",), ("b",))
        return BlockMinifloat(e, mb, pre.get("b", 8), _int(kv.get("block", "8"), "block", spec), _denorm(flags, spec))
    if family == "blog":
        _, kv, pre = _options(args, spec, (), ("block",), ("e", "b"))
        if "e" not in pre:
            raise _bad(spec, "blog needs the element exponent width eN")
        return BlockLog(pre["e"], pre.get("b", 8), _int(kv.get("block", "8"), "block", spec))
    if family in ("binary", "ternary"):
        cls = Binary if family == "binary" else Ternary
        flags, kv, _ = _options(args, spec, ("channel", "tensor"), ("alpha",), ())
        alpha = None
        if "alpha" in kv:
            try:
                alpha = float(kv["alpha"])
            except ValueError as err:
                raise _bad(spec, f"alpha must be a number, got {kv['alpha']!r}") from err
        return cls(per_channel="channel" in flags, alpha=alpha)
    if family == "scaled":
        return _scaled(args, spec)
    raise _bad(name, f"no format family {family!r}")
