"""Import of already-quantized models: hwgen's golden model against each exporter's own execution.

Models are a small MLP and CNN trained briefly on scikit-learn's digits, quantized by onnxruntime's
static quantizer (QDQ) and by brevitas (QONNX and QCDQ exports). The oracle is always the
exporter's execution: onnxruntime on the QDQ model, qonnx's executor on the QONNX model, and
brevitas' own torch forward. Outputs are compared as integer codes, for every element.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwgen.config import BuildConfig
from hwgen.errors import HwgenError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.numerics import FixedPoint
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import FloatBias, RequantArith, quantize_fixed, quantize_imported
from hwgen.sim import exact

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")


# -- data and float models --------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    return x, d.target.astype(np.int64)


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class _Cnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.Conv2d(6, 8, 3)
        self.fc = torch.nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 1)
        return self.fc(x.flatten(1))


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 15) -> torch.nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64])
            loss.backward()
            opt.step()
    return model.eval()


def _export(model: torch.nn.Module, path: Path) -> Path:
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        dynamo=False,
        opset_version=17,
    )
    return path


@pytest.fixture(scope="module")
def float_models(tmp_path_factory: pytest.TempPathFactory, digits) -> dict[str, Path]:
    torch.manual_seed(0)
    x, y = digits
    d = tmp_path_factory.mktemp("float")
    return {
        "mlp": _export(_train(_Mlp(), x[:1200], y[:1200]), d / "mlp.onnx"),
        "cnn": _export(_train(_Cnn(), x[:1200], y[:1200]), d / "cnn.onnx"),
    }


# -- hwgen side -------------------------------------------------------------------------------
def hwgen_graph(
    model: onnx.ModelProto | Path,
    float_bias: FloatBias = FloatBias.EXACT,
    arith: RequantArith = RequantArith.INTEGER,
) -> Graph:
    g = canonicalize(import_onnx(model)).graph
    return quantize_imported(g, float_bias=float_bias, requant_arith=arith).graph


def output_codes(q: Graph, x: np.ndarray) -> np.ndarray:
    return exact.run(q, x)[q.outputs[0]]


def codes_of(q: Graph, y: np.ndarray) -> np.ndarray:
    """An exporter's float output as codes of the output format; checks it lies on the grid."""
    fmt = exact.value_format(q, q.outputs[0])
    scale = float(np.asarray(exact.format_scales(fmt)).reshape(-1)[0])
    codes = np.rint(np.asarray(y, dtype=np.float64) / scale).astype(np.int64)
    np.testing.assert_array_equal((codes.astype(np.float32) * np.float32(scale)).astype(np.float32), y)
    return codes


# -- onnxruntime's static quantizer (QDQ) -------------------------------------------------------
class _Reader(quantization.CalibrationDataReader):
    def __init__(self, x: np.ndarray) -> None:
        self._it = iter([{"x": x[i : i + 16]} for i in range(0, len(x), 16)])

    def get_next(self):
        return next(self._it, None)


def ort_qdq(src: Path, dst: Path, calib: np.ndarray, per_channel: bool, act: str) -> Path:
    q = quantization
    quantization.quantize_static(
        str(src),
        str(dst),
        _Reader(calib),
        quant_format=q.QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=q.QuantType.QUInt8 if act == "uint8" else q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        extra_options={"ActivationSymmetric": act == "int8"},
    )
    return dst


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_onnxruntime_qdq_bit_exact(float_models, digits, tmp_path, model, per_channel, act) -> None:
    """onnxruntime-compatible float32 requantization: every output code equal. The integer
    multiplier + shift (what the hardware computes) differs only on float32 double-rounding ties:
    at most 0.1% of output codes (tests/sim/test_exact_requant.py pins the exact condition)."""
    x, y = digits
    path = ort_qdq(float_models[model], tmp_path / "q.onnx", x[:256], per_channel, act)
    test = x[1200:]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": test})[0]
    q32 = hwgen_graph(path, arith=RequantArith.FLOAT32)
    ours = output_codes(q32, test)
    np.testing.assert_array_equal(ours, codes_of(q32, ref))  # every output code of 597 images
    assert (ours.argmax(1) == y[1200:]).mean() > 0.85  # the model is a real, trained one
    q = hwgen_graph(path)
    assert (output_codes(q, test) != codes_of(q, ref)).mean() <= 1e-3


@pytest.mark.gxx
def test_build_float32_requant_matches_onnxruntime(float_models, digits, tmp_path) -> None:
    """`[quantize] requant_arith = "float32"`: `hwgen build` of a QDQ model from onnxruntime's static
    quantizer, then C simulation of the generated engines: every output code equals onnxruntime's."""
    from hwgen.build import build, load_build
    from hwgen.config import config_from_dict
    from hwgen.verify import run_verify

    x, _ = digits
    path = ort_qdq(float_models["mlp"], tmp_path / "q.onnx", x[:256], True, "uint8")
    cfg = config_from_dict({"quantize": {"requant_arith": "float32"}})
    b = build(path, tmp_path / "out", cfg)
    loaded = load_build(b.out_dir)
    assert all(n.attrs.get("requant_arith") == "float32" for n in loaded.graph.nodes if n.op == "Dense")
    test = x[1200:1264]
    data = tmp_path / "data.npz"
    np.savez(data, x=test)
    ver = run_verify(loaded, csim=True, rtl=False, n=len(test), data=data, seed=0)
    assert ver["csim"]["vectors"] == len(test) and ver["csim"]["mismatched_bits"] == 0
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": test})[0]
    np.testing.assert_array_equal(output_codes(loaded.graph, test), codes_of(loaded.graph, ref))


def test_onnxruntime_qdq_keeps_exporter_scales(float_models, digits, tmp_path) -> None:
    """Weights are the model's int8 codes with its per-channel scales; activations keep its scales."""
    path = ort_qdq(float_models["cnn"], tmp_path / "q.onnx", digits[0][:256], True, "uint8")
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    q = hwgen_graph(path)
    conv = next(n for n in q.nodes if n.op == "Conv")
    w_fmt = exact.value_format(q, conv.inputs[1])
    np.testing.assert_array_equal(w_fmt.encode_exact(q.const(conv.inputs[1])), inits["c1.weight_quantized"])
    assert w_fmt.scale == tuple(float(s) for s in inits["c1.weight_scale"])
    x_fmt = exact.value_format(q, q.inputs[0])
    assert x_fmt.scale == (float(inits["x_scale"]),) and x_fmt.zero_point == int(inits["x_zero_point"])
    # uint8 with zero point zp -> centred codes [-zp, 255 - zp]
    assert (x_fmt.lo, x_fmt.hi) == (-int(inits["x_zero_point"]), 255 - int(inits["x_zero_point"]))


def test_quantize_fixed_delegates_to_imported(float_models, digits, tmp_path) -> None:
    """The build's quantize step keeps an imported model's formats (calibration data is not used)."""
    path = ort_qdq(float_models["mlp"], tmp_path / "q.onnx", digits[0][:256], False, "uint8")
    g = canonicalize(import_onnx(path)).graph
    via_fixed = quantize_fixed(g, np.zeros((1, 1, 8, 8)), BuildConfig()).graph
    direct = quantize_imported(g).graph
    assert via_fixed.meta["quantized"] == "imported"
    for name, v in direct.values.items():
        assert via_fixed.values[name].type.format == v.type.format


# -- brevitas (QONNX and QCDQ exports) ----------------------------------------------------------
brevitas = pytest.importorskip("brevitas")


def _brevitas_model(kind: str, fixed: bool) -> torch.nn.Module:
    import brevitas.nn as qnn
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Int32Bias,
        Uint8ActPerTensorFixedPoint,
    )

    w = {"weight_quant": Int8WeightPerTensorFixedPoint, "bias_quant": Int32Bias} if fixed else {}
    a = {"act_quant": Int8ActPerTensorFixedPoint} if fixed else {}
    r = {"act_quant": Uint8ActPerTensorFixedPoint} if fixed else {}

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(return_quant_tensor=True, **a)
            if kind == "cnn":
                self.c1 = qnn.QuantConv2d(1, 6, 3, padding=1, return_quant_tensor=True, **w)
                n_in = 6 * 4 * 4
            else:
                self.c1 = qnn.QuantLinear(64, 32, bias=True, return_quant_tensor=True, **w)
                n_in = 32
            self.r1 = qnn.QuantReLU(return_quant_tensor=True, **r)
            self.fc = qnn.QuantLinear(n_in, 10, bias=True, return_quant_tensor=True, **w)
            self.out = qnn.QuantIdentity(return_quant_tensor=False, **a)

        def forward(self, x):
            x = self.inp(x if kind == "cnn" else x.flatten(1))
            x = self.r1(self.c1(x))
            if kind == "cnn":
                x = torch.nn.functional.max_pool2d(x, 2)
            return self.out(self.fc(x.flatten(1)))

    return Net()


@pytest.fixture(scope="module")
def brevitas_models(digits) -> dict[tuple[str, bool], torch.nn.Module]:
    x, y = digits
    return {
        (k, f): _train(_brevitas_model(k, f), x[:1200], y[:1200], epochs=3)
        for k in ("mlp", "cnn")
        for f in (True, False)
    }


def _qonnx_exec(path: Path, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    mw = ModelWrapper(str(path))
    iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
    return np.concatenate([execute_onnx(mw, {iname: x[i : i + 1]})[oname] for i in range(len(x))])


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("fixed", [True, False], ids=["pow2_scales", "float_scales"])
def test_brevitas_qonnx_bit_exact(brevitas_models, digits, tmp_path, kind, fixed) -> None:
    from brevitas.export import export_qonnx

    x, _ = digits
    net = brevitas_models[(kind, fixed)]
    test = x[1200:1400]
    path = tmp_path / "m.qonnx.onnx"
    export_qonnx(net, torch.from_numpy(test[:1]), str(path))
    q = hwgen_graph(path)
    ours = output_codes(q, test)
    with torch.no_grad():
        forward = net(torch.from_numpy(test)).numpy()
    np.testing.assert_array_equal(ours, codes_of(q, forward))  # brevitas' own torch forward
    np.testing.assert_array_equal(ours[:20], codes_of(q, _qonnx_exec(path, test[:20])))  # qonnx's executor
    if fixed:  # power-of-two scales become fixed point: the existing hardware datapath applies as is
        assert all(isinstance(q.value(v).type.format, FixedPoint) for v in q.values if not q.values[v].is_const)
        assert all(exact.is_fixed_node(q, n) for n in q.nodes)


@pytest.mark.parametrize("fixed", [True, False], ids=["pow2_scales", "float_scales"])
def test_brevitas_qcdq_bit_exact(brevitas_models, digits, tmp_path, fixed) -> None:
    """QCDQ (QuantizeLinear -> Clip -> DequantizeLinear) export: against brevitas and onnxruntime."""
    from brevitas.export import export_onnx_qcdq

    x, _ = digits
    net = brevitas_models[("cnn", fixed)]
    test = x[1200:1300]
    path = tmp_path / "m.qcdq.onnx"
    # dynamo export refuses a quantized bias; the TorchScript path exports it (batch fixed to 1)
    export_onnx_qcdq(net, torch.from_numpy(test[:1]), str(path), dynamo=not fixed)
    q = hwgen_graph(path)
    with torch.no_grad():
        forward = net(torch.from_numpy(test)).numpy()
    np.testing.assert_array_equal(output_codes(q, test), codes_of(q, forward))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ort_out = np.concatenate([sess.run(None, {name: test[i : i + 1]})[0] for i in range(len(test))])
    # onnxruntime's fused kernels round a float bias onto the accumulator grid: hwgen can do the same
    q_ort = hwgen_graph(path, FloatBias.ACCUMULATOR)
    np.testing.assert_array_equal(output_codes(q_ort, test), codes_of(q_ort, ort_out))


# -- refusals ---------------------------------------------------------------------------------
def _model(
    nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], extra_inputs: tuple[str, ...] = ()
) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N"]) for n in extra_inputs]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])]
    g = helper.make_graph(nodes, "g", ins, out, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _qdq_dense_nodes(x_scale: str = "sx") -> list[onnx.NodeProto]:
    return [
        helper.make_node("QuantizeLinear", ["x", x_scale, "zx"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", x_scale, "zx"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["w"], name="dq_w"),
        helper.make_node("Gemm", ["xd", "w"], ["h"], name="fc", transB=1),
        helper.make_node("QuantizeLinear", ["h", "sy", "zy"], ["hq"], name="q_out"),
        helper.make_node("DequantizeLinear", ["hq", "sy", "zy"], ["y"], name="dq_out"),
    ]


def _inits(zw: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "sx": np.array(0.02, np.float32),
        "zx": np.array(128, np.uint8),
        "wq": rng.integers(-127, 128, (3, 4)).astype(np.int8),
        "sw": np.array(0.01, np.float32),
        "zw": np.array(zw, np.int8),
        "sy": np.array(0.05, np.float32),
        "zy": np.array(0, np.int8),
    }


def test_minimal_qdq_gemm_matches_onnxruntime() -> None:
    """The hand-built model the refusal tests mutate is itself accepted and bit-exact."""
    m = _model(_qdq_dense_nodes(), _inits())
    q = hwgen_graph(m)
    assert q.inputs == ["x"] and q.outputs == ["y"]  # public names survive removing Q/DQ
    assert [n.op for n in q.nodes] == ["Dense"]
    x = np.random.default_rng(1).uniform(-3, 3, (500, 4)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(output_codes(q, x), codes_of(q, ref))


def _raises(model: onnx.ModelProto, *needles: str) -> None:
    with pytest.raises(HwgenError) as e:
        hwgen_graph(model)
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_refuses_zero_point_on_weights() -> None:
    _raises(_model(_qdq_dense_nodes(), _inits(zw=3)), "'dq_w'", "DequantizeLinear", "zero point", "weights")


def test_refuses_non_constant_scale() -> None:
    m = _model(_qdq_dense_nodes("s_in"), {k: v for k, v in _inits().items() if k != "sx"}, ("s_in",))
    _raises(m, "'q_in'", "QuantizeLinear", "scale", "not a constant")


def test_refuses_integer_tensor_used_by_float_op() -> None:
    nodes = _qdq_dense_nodes()
    nodes[3] = helper.make_node("Gemm", ["xq", "w"], ["h"], name="fc", transB=1)  # Gemm reads the uint8 tensor
    _raises(_model(nodes, _inits()), "'fc'", "Gemm", "QuantizeLinear 'q_in'")


def test_refuses_quantized_integer_graph_output() -> None:
    nodes = _qdq_dense_nodes()[:-1]
    nodes[-1] = helper.make_node("QuantizeLinear", ["h", "sy", "zy"], ["y"], name="q_out")
    _raises(_model(nodes, _inits()), "'y'", "QuantizeLinear")


def test_refuses_per_channel_activation_scale() -> None:
    inits = _inits()
    inits["sx"] = np.array([0.02, 0.03, 0.02, 0.01], np.float32)
    nodes = _qdq_dense_nodes()
    nodes[0] = helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="q_in", axis=1)
    _raises(_model(nodes, inits), "'q_in'", "QuantizeLinear", "per-channel activation")


def test_refuses_float_layer_in_a_quantized_model() -> None:
    """A Gemm whose weight the exporter left in float cannot be mixed with imported quantization."""
    nodes = _qdq_dense_nodes()
    inits = _inits()
    inits["wf"] = np.ones((3, 4), np.float32)
    nodes[3] = helper.make_node("Gemm", ["xd", "wf"], ["h"], name="fc", transB=1)
    _raises(_model(nodes, inits), "'fc'", "Gemm", "not quantized")


def _qonnx_model(op: str, attrs: dict[str, object], on_weight: bool) -> onnx.ModelProto:
    inits = {"s": np.array(0.5, np.float32), "z": np.array(0.0, np.float32), "b": np.array(4.0, np.float32)}
    inits["wf"] = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    ins = ["wf" if on_weight else "x", "s"] + (["z", "b"] if op == "Quant" else [])
    qn = helper.make_node(op, ins, ["qo"], name="quant0", domain="qonnx.custom_op.general", **attrs)
    xin = helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], name="qx", domain="qonnx.custom_op.general")
    gemm_in = ["xq", "qo"] if on_weight else ["qo", "wf"]
    nodes = ([xin] if on_weight else []) + [qn, helper.make_node("Gemm", gemm_in, ["y"], name="fc", transB=1)]
    m = _model(nodes, inits)
    m.opset_import.append(helper.make_opsetid("qonnx.custom_op.general", 1))
    return m


def test_refuses_bipolar_activation() -> None:
    _raises(_qonnx_model("BipolarQuant", {}, on_weight=False), "'quant0'", "BipolarQuant", "activation")


def test_refuses_unsupported_qonnx_rounding() -> None:
    _raises(_qonnx_model("Quant", {"rounding_mode": "HALF_UP"}, on_weight=False), "'quant0'", "rounding_mode")


def test_bipolar_weights_are_sign_codes() -> None:
    """BipolarQuant of a weight: codes +-1 (x >= 0 -> +1, qonnx's rule) times the scale."""
    m = _qonnx_model("BipolarQuant", {}, on_weight=True)
    q = hwgen_graph(m)
    dense = next(n for n in q.nodes if n.op == "Dense")
    w = exact.value_format(q, dense.inputs[1]).encode_exact(q.const(dense.inputs[1]))
    src = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "wf"))
    np.testing.assert_array_equal(w, np.where(src >= 0, 1, -1))
    x = np.random.default_rng(2).uniform(-20, 20, (64, 4)).astype(np.float32)
    xq = np.clip(np.round(x / 0.5), -8, 7)
    expected = xq @ np.where(src >= 0, 1, -1).T  # accumulator output (no quantizer after the Gemm)
    np.testing.assert_array_equal(output_codes(q, x), expected)
    assert math.isclose(
        float(np.asarray(exact.format_scales(exact.value_format(q, q.outputs[0]))).reshape(-1)[0]), 0.25
    )


@pytest.mark.gxx
def test_brevitas_pow2_qonnx_builds_and_csim_is_bit_exact(brevitas_models, digits, tmp_path) -> None:
    """A power-of-two brevitas model imports as plain fixed point: `hwgen build` plans and emits it,
    and C simulation equals the golden model, which equals brevitas (test above)."""
    import shutil

    from brevitas.export import export_qonnx

    from hwgen.build import build, load_build
    from hwgen.verify import run_verify

    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    x, _ = digits
    path = tmp_path / "cnn.qonnx.onnx"
    export_qonnx(brevitas_models[("cnn", True)], torch.from_numpy(x[:1]), str(path))
    data = tmp_path / "d.npz"
    np.savez(data, x=x[1200:1240])
    build(path, tmp_path / "out", BuildConfig(), calib=data)
    report = run_verify(
        load_build(tmp_path / "out"), csim=True, rtl=False, n=40, data=data, backpressure="none", seed=0
    )
    assert report["csim"]["vectors"] == 40
    assert report["csim"]["mismatched_bits"] == 0


def test_relu_between_two_scales_becomes_a_rescale() -> None:
    """Gemm -> Q(s1)/DQ -> Relu -> Q(s2)/DQ: the ReLU keeps s1 (fused into the Gemm) and an Affine
    rescale requantizes into s2, equal to onnxruntime on every code."""
    nodes = [
        *_qdq_dense_nodes()[:-1],
        helper.make_node("DequantizeLinear", ["hq", "sy", "zy"], ["hd"], name="dq_h"),
        helper.make_node("Relu", ["hd"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "sr", "zr"], ["rq"], name="q_r"),
        helper.make_node("DequantizeLinear", ["rq", "sr", "zr"], ["y"], name="dq_r"),
    ]
    inits = {**_inits(), "sr": np.array(0.0371, np.float32), "zr": np.array(0, np.uint8)}
    m = _model(nodes, inits)
    q = hwgen_graph(m)
    assert [n.op for n in q.nodes] == ["Dense", "Affine"]
    assert q.nodes[0].attrs["activation"] == "relu"
    x = np.random.default_rng(1).uniform(-3, 3, (3000, 4)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(output_codes(q, x), codes_of(q, ref))
