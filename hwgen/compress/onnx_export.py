"""Export a fixed-point quantized IR graph as a QDQ ONNX model (onnxruntime runs it, Netron shows it).

Every quantized value keeps its exact codes and power-of-two scale, zero point 0:
- the model input: QuantizeLinear -> DequantizeLinear (its format's scale, half-even rounding);
- Dense/Conv weights: DequantizeLinear of int8 codes (int16 beyond 8 bits); biases: DequantizeLinear of
  int32 codes at the accumulator scale (x scale * w scale), which is how onnxruntime stores them;
- Dense -> Gemm (transB = 1), Conv -> Conv, fused ReLU -> Relu, then QuantizeLinear -> DequantizeLinear
  into the layer's output format; MaxPool and Reshape pass codes through (no Q/DQ after them).
hwgen's QDQ import (hwgen.frontend.qdq) reads this back to the same formats and codes, so
`hwgen build compressed.onnx` rebuilds the quantized model without calibration. Activations must be
exactly 8 or 16 bits wide (the ranges of uint8/int8/uint16/int16): a narrower format would saturate
elsewhere than QuantizeLinear does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwgen.errors import UnsupportedOpError
from hwgen.ir.graph import Graph, Node
from hwgen.numerics import FixedPoint, Rounding

OPSET = 21


def _act_type(fmt: object, where: str) -> int:
    if not isinstance(fmt, FixedPoint) or fmt.bits not in (8, 16):
        raise UnsupportedOpError(
            f"{where}: activation format {fmt} has no QDQ form; use act_bits = 8 or 16 in the quantize stage"
        )
    table = {(8, False): TensorProto.UINT8, (8, True): TensorProto.INT8}
    table |= {(16, False): TensorProto.UINT16, (16, True): TensorProto.INT16}
    return table[(fmt.bits, fmt.signed)]


def _np(t: int) -> type:
    return helper.tensor_dtype_to_np_dtype(t)  # type: ignore[return-value]


class _Builder:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def name(self, base: str) -> str:
        n, i = base, 1
        while n in self.names:
            n, i = f"{base}_{i}", i + 1
        self.names.add(n)
        return n

    def const(self, base: str, arr: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def qdq(self, x: str, fmt: FixedPoint, base: str, where: str) -> str:
        """QuantizeLinear -> DequantizeLinear of `x` into `fmt` (scale 2**-frac, zero point 0)."""
        t = _act_type(fmt, where)
        scale = self.const(f"{base}.scale", np.array(2.0**-fmt.frac, np.float32))
        zp = self.const(f"{base}.zero_point", np.array(0, _np(t)))
        q = self.name(f"{base}.q")
        out = self.name(f"{base}.dq")
        self.nodes.append(helper.make_node("QuantizeLinear", [x, scale, zp], [q], name=self.name(f"{base}_Q")))
        self.nodes.append(helper.make_node("DequantizeLinear", [q, scale, zp], [out], name=self.name(f"{base}_DQ")))
        return out

    def dq_const(self, base: str, codes: np.ndarray, scale: float, dtype: type) -> str:
        c = self.const(f"{base}_codes", codes.astype(dtype))
        s = self.const(f"{base}_scale", np.array(scale, np.float32))
        out = self.name(base)
        self.nodes.append(helper.make_node("DequantizeLinear", [c, s], [out], name=self.name(f"{base}_DQ")))
        return out


def _fmt(g: Graph, name: str, where: str) -> FixedPoint:
    fmt = g.values[name].type.format
    if not isinstance(fmt, FixedPoint):
        raise UnsupportedOpError(f"{where}: value {name!r} has format {fmt}; QDQ export needs fixed point")
    return fmt


def _mac(b: _Builder, node: Node, x: str) -> str:
    g = b.g
    where = node.describe()
    x_fmt, w_fmt = _fmt(g, node.inputs[0], where), _fmt(g, node.inputs[1], where)
    if w_fmt.bits > 16:
        raise UnsupportedOpError(f"{where}: {w_fmt.bits}-bit weights; QDQ export supports up to 16")
    w_codes = w_fmt.encode_exact(np.asarray(g.const(node.inputs[1]), np.float64))
    w = b.dq_const(f"{node.name}.weight", w_codes, 2.0**-w_fmt.frac, np.int8 if w_fmt.bits <= 8 else np.int16)
    ins = [x, w]
    if len(node.inputs) > 2:
        acc_frac = x_fmt.frac + w_fmt.frac
        bias = np.asarray(g.const(node.inputs[2]), np.float64)
        b_codes = np.ldexp(bias, acc_frac)
        if np.any(b_codes != np.rint(b_codes)) or np.abs(b_codes).max(initial=0) >= 2**31:
            raise UnsupportedOpError(f"{where}: bias is not int32 codes at the accumulator scale 2**-{acc_frac}")
        ins.append(b.dq_const(f"{node.name}.bias", b_codes.astype(np.int64), 2.0**-acc_frac, np.int32))
    y = b.name(f"{node.name}.acc")
    if node.op == "Dense":
        b.nodes.append(helper.make_node("Gemm", ins, [y], name=node.name, transB=1))
    else:
        a = node.attrs
        b.nodes.append(
            helper.make_node(
                "Conv",
                ins,
                [y],
                name=node.name,
                kernel_shape=list(a["kernel"]),
                strides=list(a["strides"]),
                dilations=list(a["dilations"]),
                pads=list(a["pads_begin"]) + list(a["pads_end"]),
                group=int(a.get("group", 1)),
            )
        )
    act = node.attrs.get("activation", "none")
    if act == "relu":
        r = b.name(f"{node.name}.relu")
        b.nodes.append(helper.make_node("Relu", [y], [r], name=b.name(f"{node.name}_relu")))
        y = r
    elif act != "none":
        raise UnsupportedOpError(f"{where}: fused activation {act!r} has no QDQ export yet")
    if Rounding(node.attrs.get("rounding", "half_even")) is not Rounding.HALF_EVEN:
        raise UnsupportedOpError(f"{where}: rounding {node.attrs['rounding']}; QuantizeLinear rounds half to even")
    return b.qdq(y, _fmt(g, node.outputs[0], where), f"{node.name}.out", where)


def export_qdq(g: Graph, path: Path, *, model_name: str = "hwgen_compressed") -> Path:
    """Write the quantized graph `g` as QDQ ONNX to `path` (validated by onnx.checker)."""
    if g.meta.get("quantized") != "fixed":
        raise UnsupportedOpError(f"graph '{g.name}': QDQ export needs a graph quantized to fixed point by hwgen")
    if g.meta.get("input_rounding", "half_even") != "half_even":
        raise UnsupportedOpError(f"graph '{g.name}': input rounding must be half_even (QuantizeLinear's)")
    b = _Builder(g)
    env: dict[str, str] = {}
    inputs = []
    for name in g.inputs:
        v = g.values[name]
        b.names.add(name)
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *v.type.shape]))
        env[name] = b.qdq(name, _fmt(g, name, f"model input {name!r}"), f"{name}.in", f"model input {name!r}")
    for node in g.nodes:
        x = env[node.inputs[0]]
        if node.op in ("Dense", "Conv"):
            env[node.outputs[0]] = _mac(b, node, x)
        elif node.op in ("Reshape", "Flatten"):
            shape = b.const(f"{node.name}.shape", np.array([-1, *g.values[node.outputs[0]].type.shape], np.int64))
            out = b.name(node.outputs[0])
            b.nodes.append(helper.make_node("Reshape", [x, shape], [out], name=node.name))
            env[node.outputs[0]] = out
        elif node.op == "MaxPool":
            a = node.attrs
            out = b.name(node.outputs[0])
            b.nodes.append(
                helper.make_node(
                    "MaxPool",
                    [x],
                    [out],
                    name=node.name,
                    kernel_shape=list(a["kernel"]),
                    strides=list(a["strides"]),
                    dilations=list(a["dilations"]),
                    pads=list(a["pads_begin"]) + list(a["pads_end"]),
                    ceil_mode=int(bool(a.get("ceil_mode", False))),
                )
            )
            env[node.outputs[0]] = out
        else:
            raise UnsupportedOpError(
                f"{node.describe()}: no QDQ export of {node.op} yet (Dense, Conv, MaxPool, Reshape)"
            )
    outputs = []
    for name in g.outputs:
        b.nodes.append(helper.make_node("Identity", [env[name]], [name], name=b.name(f"{name}_out")))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *g.values[name].type.shape]))
    graph = helper.make_graph(b.nodes, model_name, inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwgen compress")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


__all__ = ["export_qdq"]
