"""A calibrated hardware cost model: LUT/FF/DSP/BRAM/LUTRAM and latency per layer from the Schedule.

Why a model: the search evaluates hundreds of configurations and cannot run Yosys for each.
DSPs are counted exactly from the multiplier widths by Yosys's own `synth_xilinx` rule (below);
the other resources are linear in a few features the Schedule fixes (multipliers and their
operand widths, accumulator width, weight-ROM words and word width, buffer and FIFO bits), with
non-negative coefficients per engine kind fitted against Yosys by `benchmarks/cost_model.py` and
stored in `cost_coefficients.json`. Latency and II are the Schedule's own (cycle-exact) figures.
Engines with no calibration sample (pool, add, fork, concat, lut) get the coarse uncalibrated
estimates of `_UNCALIBRATED`; they do not change with the weight widths the search varies.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.hw import engine_timing as et
from hwgen.hw import timing
from hwgen.hw.plan import ConvPlan, DensePlan, EnginePlan, Schedule

COEFFICIENTS_PATH = Path(__file__).with_name("cost_coefficients.json")
RESOURCES = ("LUT", "FF", "DSP", "BRAM", "LUTRAM")
FITTED = ("LUT", "FF", "LUTRAM")  #: DSP and BRAM are counted by rules, not fitted
#: Yosys synth_xilinx maps a $mul to DSP48 via mul2dsp with these limits (7-series: 25x18, signed only)
DSP_A_MAXWIDTH, DSP_B_MAXWIDTH = 25, 18
DSP_A_MINWIDTH, DSP_B_MINWIDTH, DSP_Y_MINWIDTH = 2, 2, 9
#: one DSP counts as this many LUTs in the scalar `area` (LUT + LUT_PER_DSP * DSP) the search minimizes
LUT_PER_DSP = 100
#: LUT6 as distributed ROM: 64 words x 1 bit
LUT_ROM_WORDS = 64
#: Yosys (memory_libmap) puts the weight ROM into block RAM from this depth on, and a RAM (input or
#: line buffer) from RAM_BRAM_MIN_DEPTH on; shallower memories become LUTs / LUTRAM. Read off the
#: calibration: ROMs of 1152 and 256 words stayed in LUTs, 2048+ went to BRAM; RAMs of 128 words
#: went to LUTRAM, 512 to BRAM.
ROM_BRAM_MIN_DEPTH = 2048
RAM_BRAM_MIN_DEPTH = 512
#: RAMB36 depth -> width (7-series / UltraScale); a RAMB18 at the same depth is half as wide
_RAMB36 = {512: 72, 1024: 36, 2048: 18, 4096: 9, 8192: 4, 16384: 2, 32768: 1}

FEATURES = (
    "const",
    "lut_mult",
    "mults_acc",
    "mults_mul",
    "mults_ops",
    "rom_luts",
    "rom_bits",
    "buf_bits",
    "fifo_bits",
    "pe_req",
)
_UNCALIBRATED = {"LUT": 40.0, "FF": 40.0, "BRAM": 0.0, "LUTRAM": 0.0}  # per engine, plus width terms below


def dsp_per_multiplier(a_bits: int, b_bits: int, y_bits: int) -> int:
    """DSP48 blocks Yosys gives one signed a x b -> y multiplier.

    mul2dsp leaves a product to LUTs when an operand is under 2 bits or the result under 9 bits
    (DSP_Y_MINWIDTH); otherwise one DSP per 25x18 (signed: 24x17 magnitude) tile.
    """
    a, b = max(a_bits, b_bits), min(a_bits, b_bits)
    if a < DSP_A_MINWIDTH or b < DSP_B_MINWIDTH or y_bits < DSP_Y_MINWIDTH:
        return 0
    if a <= DSP_A_MAXWIDTH and b <= DSP_B_MAXWIDTH:
        return 1
    return math.ceil((a - 1) / (DSP_A_MAXWIDTH - 1)) * math.ceil((b - 1) / (DSP_B_MAXWIDTH - 1))


def memory_brams(depth: int, width: int) -> float:
    """Block RAMs (RAMB36 = 1, RAMB18 = 0.5) of a depth x width memory: full RAMB36 columns plus
    a RAMB18 (or RAMB36) for the leftover bits, at the cheapest aspect ratio."""
    best = math.inf
    for d, w36 in _RAMB36.items():
        tiles = math.ceil(depth / d)
        full, rem = divmod(width, w36)
        extra = 0.0 if rem == 0 else (0.5 if rem <= max(1, w36 // 2) and d <= 16384 else 1.0)
        best = min(best, tiles * (full + extra))
    return float(best)


@dataclass(frozen=True)
class MacShape:
    """The numbers of a MAC engine (dense or conv) the cost depends on."""

    kind: str
    pe: int
    simd: int
    x_w: int  #: input as a signed multiplier operand
    w_w: int
    mul_w: int
    acc_w: int
    out_w: int
    req_w: int
    rom_depth: int  #: weight-ROM words
    rom_word: int  #: weight-ROM word bits (PE x SIMD weights)
    buf_depth: int  #: input buffer (dense: 2 banks) or line buffer words
    buf_word: int  #: its word bits
    fifo_bits: int  #: output FIFO bits

    @property
    def rom_in_bram(self) -> bool:
        return self.rom_depth >= ROM_BRAM_MIN_DEPTH

    @property
    def buf_in_bram(self) -> bool:
        return self.buf_depth >= RAM_BRAM_MIN_DEPTH


def mac_shape(p: DensePlan | ConvPlan) -> MacShape:
    from hwgen.hw.rtl_emit import requant_width

    x_w = p.inp.bits + (0 if p.inp.signed else 1)
    mul_w = p.prod.bits + (0 if p.prod.signed else 1)
    req_w = requant_width(p.acc.bits, p.requant.shift, p.out.bits)
    if isinstance(p, DensePlan):
        depth = p.nf * p.sf
        buf_depth, buf_word = 2 * p.sf, p.simd * p.inp.bits
        fifo = timing.dense_out_fifo_depth(p.in_features, p.out_features, p.pe, p.simd) * p.pe * p.out.bits
        kind = "dense"
    else:
        depth = (p.channels_out // p.pe) * et.conv_tiles_per_fold(p)
        lanes = et.conv_lanes(p)
        buf_depth, buf_word = et.conv_buffer_pixels(p) * (p.channels_in // lanes), lanes * p.inp.bits
        fifo = et.conv_out_fifo_depth(p) * p.pe * p.out.bits
        kind = "conv"
    return MacShape(
        kind,
        p.pe,
        p.simd,
        x_w,
        p.w.bits,
        mul_w,
        p.acc.bits,
        p.out.bits,
        req_w,
        depth,
        p.pe * p.simd * p.w.bits,
        buf_depth,
        buf_word,
        fifo,
    )


def mac_dsp(s: MacShape) -> int:
    return s.pe * s.simd * dsp_per_multiplier(s.x_w, s.w_w, s.mul_w)


def mac_bram(s: MacShape) -> float:
    rom = memory_brams(s.rom_depth, s.rom_word) if s.rom_in_bram else 0.0
    return rom + (memory_brams(s.buf_depth, s.buf_word) if s.buf_in_bram else 0.0)


def mac_features(s: MacShape) -> dict[str, float]:
    """The regressors of the fitted resources (see FEATURES)."""
    mults = s.pe * s.simd
    in_lut = dsp_per_multiplier(s.x_w, s.w_w, s.mul_w) == 0
    return {
        "const": 1.0,
        "lut_mult": float(mults * s.x_w * s.w_w) if in_lut else 0.0,  # a LUT multiplier's area ~ a*b
        "mults_acc": float(mults * s.acc_w),  # adder tree and accumulators
        "mults_mul": float(mults * s.mul_w),  # product registers
        "mults_ops": float(mults * (s.x_w + s.w_w)),  # operand registers
        "rom_luts": float(s.rom_word * math.ceil(s.rom_depth / LUT_ROM_WORDS))
        if s.rom_depth > 1 and not s.rom_in_bram
        else 0.0,
        "rom_bits": float(s.rom_word * s.rom_depth) if not s.rom_in_bram else 0.0,
        "buf_bits": float(s.buf_depth * s.buf_word) if not s.buf_in_bram else 0.0,
        "fifo_bits": float(s.fifo_bits),
        "pe_req": float(s.pe * s.req_w),  # round/shift/clamp per output lane
    }


def engine_features(p: EnginePlan, sched: Schedule | None = None) -> dict[str, Any]:
    """Features of one engine (JSON-able): MAC engines' shape + regressors, or the kind alone."""
    if isinstance(p, DensePlan | ConvPlan):
        s = mac_shape(p)
        return {"kind": s.kind, "dsp": mac_dsp(s), "bram": mac_bram(s), **mac_features(s)}
    return {"kind": p.engine}


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Non-negative least squares per engine kind and fitted resource, on relative error.

    Rows are weighted by 1/measured so the fit minimizes relative (percentage) error, the figure
    reported; the coefficients stay non-negative so that no resource ever gets cheaper with width.
    """
    from scipy.optimize import nnls

    out: dict[str, Any] = {"features": list(FEATURES), "lut_per_dsp": LUT_PER_DSP, "kinds": {}}
    for kind in sorted({r["kind"] for r in rows}):
        sel = [r for r in rows if r["kind"] == kind]
        x = np.array([[r["features"][f] for f in FEATURES] for r in sel])
        per: dict[str, list[float]] = {}
        for res in FITTED:
            y = np.array([float(r["measured"][res]) for r in sel])
            wgt = 1.0 / np.maximum(y, 1.0)
            coef, _ = nnls(x * wgt[:, None], y * wgt)
            per[res] = [float(c) for c in coef]
        out["kinds"][kind] = per
    return out


def save_coefficients(coeffs: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(coeffs, indent=1, sort_keys=True) + "\n")


def ape(estimate: float, measured: float) -> float:
    """Absolute percentage error; a measured 0 compares against 1 (no division by zero)."""
    return abs(estimate - measured) / max(abs(measured), 1.0)


@dataclass
class CostModel:
    """Resources and timing of a Schedule from calibrated coefficients."""

    coefficients: dict[str, Any]

    @classmethod
    def load(cls, path: Path = COEFFICIENTS_PATH) -> CostModel:
        from hwgen.errors import ConfigError

        try:
            return cls(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no cost-model coefficients; run benchmarks/cost_model.py") from None

    def predict_features(self, kind: str, feats: dict[str, Any]) -> dict[str, float]:
        coef = self.coefficients["kinds"].get(kind)
        if coef is None:
            return {**_UNCALIBRATED, "DSP": 0.0, "BRAM": 0.0}
        out = {res: float(sum(c * feats[f] for c, f in zip(coef[res], FEATURES, strict=True))) for res in FITTED}
        out["DSP"] = float(feats["dsp"])
        out["BRAM"] = float(feats["bram"])
        return out

    def layer(self, p: EnginePlan) -> dict[str, Any]:
        """One engine's estimate: resources, latency, II and multiplier count."""
        feats = engine_features(p)
        est = self.predict_features(feats["kind"], feats) if "dsp" in feats else self._other(p)
        return {
            "name": p.name,
            "source": p.source,
            "engine": p.engine,
            **est,
            "latency": int(p.latency),
            "ii": int(p.ii),
        }

    @staticmethod
    def _other(p: EnginePlan) -> dict[str, float]:
        """Coarse estimate for engines without calibration (their cost barely depends on weight bits)."""
        bits = max(
            (getattr(p, a).bits for a in ("inp", "out", "elem", "a", "b") if hasattr(getattr(p, a, None), "bits")),
            default=8,
        )
        return {
            "LUT": _UNCALIBRATED["LUT"] + 6.0 * bits,
            "FF": _UNCALIBRATED["FF"] + 4.0 * bits,
            "DSP": 0.0,
            "BRAM": 0.0,
            "LUTRAM": 0.0,
        }

    def schedule(self, sched: Schedule) -> dict[str, Any]:
        """Per-layer estimates and totals (`area` = LUT + LUT_PER_DSP * DSP, the search's cost)."""
        layers = [self.layer(p) for p in sched.layers]
        total = {res: round(sum(r[res] for r in layers), 2) for res in RESOURCES}
        lut_per_dsp = self.coefficients.get("lut_per_dsp", LUT_PER_DSP)
        total["area"] = round(total["LUT"] + lut_per_dsp * total["DSP"], 2)
        return {"layers": layers, "total": total, "latency": int(sched.latency), "ii": int(sched.ii)}


__all__ = ["COEFFICIENTS_PATH", "RESOURCES", "CostModel", "ape", "dsp_per_multiplier", "engine_features", "fit"]
