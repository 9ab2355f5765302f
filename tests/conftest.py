"""Shared builders for the hwgen tests: small ONNX graphs made with onnx.helper, and runners.

Every builder returns a checked `onnx.ModelProto` with a dynamic batch axis named "N" unless told
otherwise, so the same model runs in onnxruntime (the independent float oracle) and in hwgen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import settings
from onnx import TensorProto, helper, numpy_helper

from hwgen.config import BuildConfig, LayerConfig, QuantConfig
from hwgen.ir.graph import Graph

# deterministic, no example database written into the repository, no flaky deadlines on a loaded CI box
settings.register_profile("hwgen", database=None, deadline=None, derandomize=True)
settings.load_profile("hwgen")

REPO = Path(__file__).resolve().parents[1]
LENET_ONNX = REPO / "models" / "lenet300" / "lenet300.onnx"
LENET_TEST = REPO / "models" / "lenet300" / "mnist_test_1k.npz"
LENET_CALIB = REPO / "models" / "lenet300" / "mnist_calib.npz"


# -- ONNX graph building ---------------------------------------------------------------------
def tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    """An initializer; float arrays are stored as float32, integer arrays as int64, bools as bool."""
    a = np.asarray(array)
    if a.dtype != bool:
        a = a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int64)
    return numpy_helper.from_array(a, name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int | str]],
    outputs: dict[str, Sequence[int | str] | None],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    name: str = "g",
    check: bool = True,
) -> onnx.ModelProto:
    """A float model: `inputs`/`outputs` map names to shapes (strings are symbolic dims).

    An output shape of None is left to ONNX shape inference (the checker wants one).
    """
    vi_in = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in inputs.items()]
    vi_out = [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, None if s is None else list(s)) for k, s in outputs.items()
    ]
    inits = [tensor(k, v) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), name, vi_in, vi_out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if any(s is None for s in outputs.values()) and check:
        model = onnx.shape_inference.infer_shapes(model)  # fills in the output shapes left open
    if check:
        onnx.checker.check_model(model)
    return model


def make_mlp_onnx(
    layers: Sequence[int],
    seed: int,
    *,
    with_bn: bool = False,
    act: str = "relu",
    use_matmul: bool = False,
    trans_b: bool = True,
    opset: int = 17,
    bias_scale: float = 0.1,
) -> onnx.ModelProto:
    """An MLP [N, layers[0]] -> ... -> [N, layers[-1]]: Gemm (or MatMul+Add) [+ BN] + act per hidden layer.

    Node names are fc{i}, bn{i}, act{i}; the last layer has no activation. Weights scale as
    1/sqrt(fan_in) so activations stay O(1).
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}
    cur = "x"
    for i, (k, m) in enumerate(itertools.pairwise(layers)):
        w = rng.normal(0.0, 1.0 / np.sqrt(k), size=(m, k))
        b = rng.normal(0.0, bias_scale, size=m)
        out = f"h{i}"
        if use_matmul:
            inits[f"w{i}"], inits[f"b{i}"] = w.T, b
            nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"mm{i}"], name=f"fc{i}"))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out], name=f"add{i}"))
        else:
            inits[f"w{i}"], inits[f"b{i}"] = (w if trans_b else w.T), b
            nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out], name=f"fc{i}", transB=int(trans_b)))
        cur = out
        last = i == len(layers) - 2
        if with_bn and not last:
            inits[f"g{i}"] = rng.uniform(0.5, 1.5, m)
            inits[f"be{i}"] = rng.normal(0.0, 0.1, m)
            inits[f"mu{i}"] = rng.normal(0.0, 0.1, m)
            inits[f"var{i}"] = rng.uniform(0.5, 2.0, m)
            ins = [cur, f"g{i}", f"be{i}", f"mu{i}", f"var{i}"]
            nodes.append(helper.make_node("BatchNormalization", ins, [f"bn{i}_out"], name=f"bn{i}", epsilon=1e-3))
            cur = f"bn{i}_out"
        if not last and act != "none":
            if act == "relu":
                nodes.append(helper.make_node("Relu", [cur], [f"a{i}"], name=f"act{i}"))
            elif act == "clip":
                inits[f"lo{i}"], inits[f"hi{i}"] = np.array(-0.5, np.float32), np.array(0.75, np.float32)
                nodes.append(helper.make_node("Clip", [cur, f"lo{i}", f"hi{i}"], [f"a{i}"], name=f"act{i}"))
            else:
                raise ValueError(act)
            cur = f"a{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    return make_model(nodes, {"x": ["N", layers[0]]}, {"y": ["N", layers[-1]]}, inits, opset=opset, name="mlp")


def save_model(model: onnx.ModelProto, directory: Path, name: str = "model.onnx") -> Path:
    """Write `model` under `directory` and return its path."""
    path = Path(directory) / name
    onnx.save(model, str(path))
    return path


# -- runners ---------------------------------------------------------------------------------
def run_ort(model: onnx.ModelProto | Path, feeds: np.ndarray | dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of `model` in onnxruntime (CPU, float32 inputs)."""
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    if not isinstance(feeds, dict):
        feeds = {sess.get_inputs()[0].name: feeds}
    return sess.run(None, {k: np.asarray(v, dtype=np.float32) for k, v in feeds.items()})


def run_reference(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The first output of hwgen's float reference executor."""
    from hwgen.sim import reference

    return reference.run(graph, x)[graph.outputs[0]]


def random_input(shape: Sequence[int], seed: int, batch: int = 5) -> np.ndarray:
    """float32-representable random samples (so ORT and the float64 reference see the same data)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, size=(batch, *shape)).astype(np.float32)


def quant_config(
    *,
    weight_bits: int = 8,
    act_bits: int = 8,
    input_bits: int | None = None,
    rounding: str = "half_even",
    calibration: str = "minmax",
    percentile: float = 99.99,
    layers: dict[str, LayerConfig] | None = None,
) -> BuildConfig:
    """A BuildConfig built directly (not through TOML), for the quantizer tests."""
    from hwgen.config import Calibration
    from hwgen.numerics import Rounding

    q = QuantConfig(
        weight_bits=weight_bits,
        act_bits=act_bits,
        input_bits=input_bits,
        calibration=Calibration(calibration),
        percentile=percentile,
        rounding=Rounding(rounding),
    )
    return BuildConfig(quantize=q, layers=layers or {})


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lenet_model() -> onnx.ModelProto:
    return onnx.load(str(LENET_ONNX))


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    with np.load(LENET_TEST) as f:
        return f["x"], f["y"]


@pytest.fixture(scope="session")
def mnist_calib() -> np.ndarray:
    with np.load(LENET_CALIB) as f:
        return f["x"]


# -- a throwaway PostgreSQL server (tests marked `postgres`: `hwgen search` workers sharing a study) ---------
# Skips when the server binaries are missing (.ci/run installs Debian `postgresql`).
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A postgresql:// URL of a fresh database on a private server."""
    from hwgen.search import local_postgres

    if not local_postgres.available():
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    with local_postgres.temporary_server() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_search_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-layer MLP (fc0, fc1, fc2) and 400 labelled samples (labels: the float model's argmax)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hwgen.frontend import import_onnx
    from hwgen.sim import reference

    d = tmp_path_factory.mktemp("tiny_search")
    model = d / "mlp.onnx"
    rng = np.random.default_rng(3)
    nodes, inits, cur, sizes = [], [], "x", [16, 12, 8, 4]
    for i, (k, m) in enumerate(itertools.pairwise(sizes)):
        inits += [
            numpy_helper.from_array((rng.standard_normal((m, k)) / np.sqrt(k)).astype(np.float32), f"w{i}"),
            numpy_helper.from_array((0.1 * rng.standard_normal(m)).astype(np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [f"g{i}"], name=f"fc{i}", transB=1))
        cur = f"g{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"act{i}"))
            cur = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.random.default_rng(4).standard_normal((400, 16)).astype(np.float32)
    g = import_onnx(model, name="mlp")
    y = reference.run(g, x)[g.outputs[0]].reshape(len(x), -1).argmax(1)
    data = d / "data.npz"
    np.savez(data, x=x, y=y)
    return model, data
