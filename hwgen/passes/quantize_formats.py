"""Mixed precision by configuration: each MAC layer's weights and activations in their own number format.

Runs after `[quantize] weight_format / act_format` or `[layers.NAME] weight_format / act_format` asks for
one (spec strings, `hwgen.numerics.parse_format`). A `fixed<B,F>` spec means fixed point of B bits: the
fixed path of `quantize_fixed` with weight_bits/act_bits = B (the scale is re-chosen as there).

Rewrites:
- every value is first quantized to fixed point exactly as `quantize_fixed` does;
- weights of a Dense/Conv with a non-fixed weight format: the [out, reduction] matrix (Conv input channels
  moved last, `sim.exact.weight_matrix`) is calibrated (`calibrators.calibrate_tensor`, MSE: minifloat
  bias, binary/ternary alpha; block formats choose their exponent per block along the reduction axis)
  and replaced by its exactly representable values;
- activations: a MAC output takes its layer's act_format only when every consumer is a Dense/Conv
  (minifloat may pass Flatten/Reshape/Identity on the way; formats with shared fields must feed the MAC
  directly) and it is not a graph output. Otherwise it stays fixed point of act_bits: the MAC
  requantizes straight into the fixed format its consumer (pool, add, concat, LUT, graph output)
  needs. The graph input takes [quantize] act_format under the same rule. Activation scales come
  from calibration (minmax/percentile as configured; binary/ternary alpha by MSE);
- the bias of a format layer is fixed point of BIAS_BITS bits (its own binary point); sim.exact adds
  it to the exact accumulator.
Refuses:  formats on non-MAC layers, float32 as a layer format, a fused Clip before a non-fixed
          output -> ConfigError / UnsupportedOpError naming the layer.
Records:  per format layer: weight/input/output formats, weight SQNR, weight storage bits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hwgen.config import BuildConfig, LayerConfig
from hwgen.errors import ConfigError, UnsupportedOpError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.numerics import BLOCK_FORMATS, Binary, FixedPoint, NumberFormat, Rounding, Ternary, parse_format
from hwgen.passes.base import NodeRecord, PassResult
from hwgen.passes.calibrators import CalibMethod, calibrate_tensor
from hwgen.sim import reference
from hwgen.sim.exact import format_block_axis, is_format_value, weight_from_matrix, weight_matrix

MAC_OPS = ("Dense", "Conv")
#: ops that only move codes around: a minifloat activation may pass them on its way to a MAC
LAYOUT_OPS = ("Flatten", "Reshape", "Identity")
#: width of a format layer's bias (fixed point with its own binary point, added exactly)
BIAS_BITS = 24


def formats_requested(config: BuildConfig) -> bool:
    """True when the config names any number format (globally or for a layer)."""
    q = config.quantize
    return bool(
        q.weight_format or q.act_format or any(lc.weight_format or lc.act_format for lc in config.layers.values())
    )


def _parse(spec: str | None, where: str) -> NumberFormat | None:
    if spec is None:
        return None
    fmt = parse_format(spec)
    if not isinstance(fmt, FixedPoint) and not is_format_value(fmt):
        raise ConfigError(f"{where}: {spec!r} is not a quantized number format; give e.g. 'minifloat<e4m3>'")
    return fmt


def _fixed_bits(fmt: NumberFormat | None) -> int | None:
    return fmt.bits if isinstance(fmt, FixedPoint) else None


def _fixed_config(graph: Graph, config: BuildConfig) -> BuildConfig:
    """The config of the fixed-point first pass: no formats; fixed<B,F> specs become B bits."""
    q = config.quantize
    gw, ga = _parse(q.weight_format, "[quantize] weight_format"), _parse(q.act_format, "[quantize] act_format")
    quant = dataclasses.replace(
        q,
        weight_format=None,
        act_format=None,
        weight_bits=_fixed_bits(gw) or q.weight_bits,
        act_bits=_fixed_bits(ga) or q.act_bits,
    )
    by_name = {n: node for node in graph.nodes for n in (node.name, node.onnx_name) if n}
    layers: dict[str, LayerConfig] = {}
    for name, lc in config.layers.items():
        where = f"[layers.{name}]"
        w, a = _parse(lc.weight_format, f"{where} weight_format"), _parse(lc.act_format, f"{where} act_format")
        node = by_name.get(name)
        if (w or a) and node is not None and node.op not in MAC_OPS:
            raise ConfigError(
                f"{where}: {node.describe()} is a {node.op}; number formats apply to Dense/Conv layers only "
                "(other ops keep fixed point): remove weight_format/act_format there"
            )
        layers[name] = dataclasses.replace(
            lc,
            weight_format=None,
            act_format=None,
            weight_bits=_fixed_bits(w) or lc.weight_bits,
            act_bits=_fixed_bits(a) or lc.act_bits,
        )
    return dataclasses.replace(config, quantize=quant, layers=layers)


def layer_formats(config: BuildConfig, node: Node) -> tuple[NumberFormat | None, NumberFormat | None]:
    """(weight format, activation format) a MAC layer asks for; None or fixed point = the fixed path."""
    q, lc = config.quantize, config.layer(node.name, node.onnx_name)
    w = _parse(lc.weight_format or q.weight_format, f"layer {node.name!r} weight_format")
    a = _parse(lc.act_format or q.act_format, f"layer {node.name!r} act_format")
    return (None if isinstance(w, FixedPoint) else w), (None if isinstance(a, FixedPoint) else a)


def _consumers(g: Graph, value: str) -> list[Node]:
    return [n for n in g.nodes if value in n.inputs]


def _format_chain(g: Graph, value: str, fmt: NumberFormat) -> list[str] | None:
    """The values that carry `fmt` from `value` to its MAC consumers, or None when some consumer needs fixed point."""
    if value in g.outputs:
        return None
    chain = [value]
    for c in _consumers(g, value):
        if c.op in MAC_OPS and c.inputs[0] == value:
            if c.op == "Conv" and isinstance(fmt, Binary) and any(c.attrs.get("pads_begin", ())):
                return None  # zero padding has no binary code
            continue
        if c.op in LAYOUT_OPS and not isinstance(fmt, BLOCK_FORMATS):
            rest = _format_chain(g, c.outputs[0], fmt)
            if rest is None:
                return None
            chain += rest
            continue
        return None
    return chain


def _calibrate_activation(x: np.ndarray, fmt: NumberFormat, config: BuildConfig) -> NumberFormat:
    q = config.quantize
    method = CalibMethod.MSE if isinstance(fmt, (Binary, Ternary)) else CalibMethod(str(q.calibration))
    cal = calibrate_tensor(
        x, fmt, method=method, rounding=q.rounding, percentile=q.percentile, block_axis=format_block_axis(x.ndim)
    )
    return cal.fmt


def _quantize_weight(g: Graph, node: Node, w: np.ndarray, fmt: NumberFormat) -> tuple[NumberFormat, np.ndarray]:
    """(format stored in the IR, exactly representable weight values in the weight's shape)."""
    mat = weight_matrix(np.asarray(w, dtype=np.float64))
    per_channel = isinstance(fmt, (Binary, Ternary)) and fmt.per_channel
    cal = calibrate_tensor(
        mat, fmt, method=CalibMethod.MSE, rounding=Rounding.HALF_EVEN, per_channel=per_channel, axis=0, block_axis=-1
    )
    q = cal.quantize(mat, rounding=Rounding.HALF_EVEN)
    # per-channel alphas: the format recomputes alpha_c = mean |q_c| from the values, which is exactly the chosen one
    stored = fmt if cal.channel_formats is not None else cal.fmt
    return stored, weight_from_matrix(q, tuple(w.shape))


def _set(g: Graph, name: str, fmt: NumberFormat, const: np.ndarray | None = None) -> None:
    v = g.values[name]
    g.values[name] = Value(v.name, TensorType(v.type.shape, fmt), v.const if const is None else const)


def quantize_formats(graph: Graph, calib_x: np.ndarray, config: BuildConfig) -> PassResult:
    """Quantize with per-layer number formats (see module docstring). Functional."""
    from hwgen.passes.quantize import fixed_for_bound, quantize_fixed

    fixed_cfg = _fixed_config(graph, config)
    res = quantize_fixed(graph, calib_x, fixed_cfg)
    g = res.graph
    float_nodes = {n.name: n for n in graph.nodes}
    env = reference.run(graph, calib_x, keep=True)
    records: list[NodeRecord] = list(res.records)
    # activations: MAC outputs (and the graph input) whose consumers are all MACs
    wanted: list[tuple[str, NumberFormat]] = []
    if config.quantize.act_format:
        a = _parse(config.quantize.act_format, "[quantize] act_format")
        if a is not None and not isinstance(a, FixedPoint):
            wanted += [(name, a) for name in g.inputs]
    for node in g.nodes:
        if node.op in MAC_OPS and (a := layer_formats(config, node)[1]) is not None:
            wanted.append((node.outputs[0], a))
    kept_fixed: dict[str, str] = {}
    for value, fmt in wanted:
        chain = _format_chain(g, value, fmt)
        if chain is None:
            kept_fixed[value] = str(g.value(value).type.format)
            continue
        cal = _calibrate_activation(np.asarray(env[value], dtype=np.float64), fmt, config)
        for v in chain:
            _set(g, v, cal)
    # weights and biases of the layers that now compute in formats
    for node in g.nodes:
        if node.op not in MAC_OPS:
            continue
        w_req = layer_formats(config, node)[0]
        src = float_nodes[node.name]
        if w_req is not None:
            stored, values = _quantize_weight(g, node, graph.const(src.inputs[1]), w_req)
            _set(g, node.inputs[1], stored, values)
        formats = [g.value(v).type.format for v in (node.inputs[0], node.inputs[1], node.outputs[0])]
        if not any(is_format_value(f) for f in formats):
            continue
        act = node.attrs.get("activation", "none")
        if is_format_value(formats[2]) and act not in ("none", "relu"):
            raise UnsupportedOpError(
                f"{node.describe()}: a fused {act} before a {formats[2]} output is not supported; "
                "use ReLU or a fixed-point act_format for this layer"
            )
        w_shape = g.const(node.inputs[1]).shape
        b = np.asarray(graph.const(src.inputs[2]), dtype=np.float64) if len(src.inputs) > 2 else np.zeros(w_shape[0])
        b_fmt = fixed_for_bound(float(np.abs(b).max(initial=0.0)), BIAS_BITS, signed=True)
        b_vals = b_fmt.quantize(b, rounding=Rounding.HALF_EVEN)
        _set(g, node.inputs[2], b_fmt, b_vals.reshape(g.const(node.inputs[2]).shape))
        w_vals = g.const(node.inputs[1])
        w_float = np.asarray(graph.const(src.inputs[1]), dtype=np.float64)
        noise = float(np.sum((w_float - w_vals) ** 2))
        sqnr = float("inf") if noise == 0 else 10.0 * np.log10(max(float(np.sum(w_float**2)), 1e-300) / noise)
        wf = formats[1]
        records.append(
            NodeRecord(
                node.name,
                node.onnx_name,
                "quantize_formats",
                {
                    "weight_format": str(wf),
                    "input_format": str(formats[0]),
                    "act_format": str(formats[2]),
                    "act_format_kept_fixed": kept_fixed.get(node.outputs[0], ""),
                    "bias_format": b_fmt.name,
                    "weight_sqnr_db": round(sqnr, 3),
                    "weight_storage_bits": weight_storage_bits(wf, w_shape),
                },
            )
        )
    g.meta["quantized"] = "formats"
    return PassResult(g, True, records)


def weight_storage_bits(fmt: NumberFormat, shape: tuple[int, ...]) -> int:
    """Bits to store a weight of `shape` in `fmt` (shared fields along the reduction axis / per channel)."""
    mat = (int(shape[0]), int(np.prod(shape[1:], dtype=np.int64)))
    if isinstance(fmt, FixedPoint):
        return fmt.bits * mat[0] * mat[1]
    if isinstance(fmt, (Binary, Ternary)):
        return int(fmt.storage_bits(mat, axis=0))
    if isinstance(fmt, BLOCK_FORMATS):
        return int(fmt.storage_bits(mat, axis=-1))  # type: ignore[call-arg]
    return int(fmt.storage_bits(mat))  # type: ignore[attr-defined]
