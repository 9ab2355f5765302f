"""Quantized IR -> Schedule: pick an engine and a folding for every node.

MLPs become a chain of dense engines over element-serial streams. Other graphs (CNNs) become a
dataflow graph of engines over channels-last streams (HWC: pixel by pixel, channels within a
pixel), with forks before values that several engines read. Flattening an image changes the
element order from ONNX's CHW to the stream's HWC, so the Dense that reads it has its weight
columns permuted to stream order; reshapes are otherwise free.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from hwgen.config import BuildConfig, LayerConfig
from hwgen.errors import ScheduleError, UnsupportedOpError
from hwgen.hw import channel_affine, winograd
from hwgen.hw.devices import Device, get_device
from hwgen.hw.huffman import DEFAULT_WEIGHT_MAX_LEN
from hwgen.hw.names import legalize
from hwgen.hw.plan import (
    AddPlan,
    ConcatPart,
    ConcatPlan,
    ConvPlan,
    DensePlan,
    ForkPlan,
    IntType,
    LutPlan,
    PoolPlan,
    Requant,
    Schedule,
    Stream,
    StreamPort,
)
from hwgen.hw.resources import folding_cost, weight_banks
from hwgen.hw.schedule import (
    accumulator_range,
    chain_schedule,
    choose_folding,
    int_type_for,
    mac_types,
    model_hash,
    plan_dense,
    product_type,
    signed_bits_for,
    unify_shift,
    valid_foldings,
    with_product_type,
)
from hwgen.hw.softmax import plan_softmax, softmax_layout
from hwgen.hw.sparse import DEFAULT_INDEX_BITS, SparseDensePlan, replace_layers, sparse_from_dense
from hwgen.ir.graph import Graph, Node
from hwgen.numerics import FixedPoint, Rounding
from hwgen.passes.quantize import LUT_MAX_INPUT_BITS
from hwgen.sim import exact
from hwgen.sim.exact import LUT_OPS, ScaledInt, affine_codes, dense_codes, dense_requant, fixed_format
from hwgen.sim.winograd_kernels import tile_grid

log = logging.getLogger(__name__)

#: ops that only relabel the stream (C order is kept), so they cost no hardware
FREE_OPS = ("Flatten", "Reshape", "Identity")


def code_type(fmt: FixedPoint | ScaledInt) -> IntType:
    return IntType(fmt.bits, fmt.signed)


#: ops with imported (non-power-of-two) scales that have hardware: MACs requantize with M0 and a
#: shift, max pooling passes codes through; everything else needs a power-of-two (fixed) graph
SCALED_OPS = ("Dense", "Conv", "MaxPool", "GlobalMaxPool", *FREE_OPS)


def mac_requant(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray, Requant]:
    """Weight codes, bias codes (accumulator units) and requantization of a Dense/Conv.

    Fixed point: a pure shift. Imported scales: integer multiplier + one shift per layer, the
    bias entering as the requant offset (so the accumulator starts at 0), as sim.exact computes.
    """
    if exact.is_format_node(graph, node):
        fmts = {
            role: graph.value(v).type.format
            for role, v in zip(("input", "weights", "output"), (*node.inputs[:2], node.outputs[0]), strict=True)
        }
        raise ScheduleError(
            f"{node.describe()}: "
            + ", ".join(f"{role} {fmt}" for role, fmt in fmts.items())
            + ": layers in minifloat, block, binary or ternary formats run in the golden model and QAT "
            "but have no hardware lowering yet; give this layer fixed-point formats to build it"
        )
    if exact.is_fixed_node(graph, node):
        w, b = dense_codes(graph, node)
        r = dense_requant(graph, node)
        return w, b, Requant(r.shift, r.rounding, r.lo, r.hi)
    sr = exact.scaled_requant(graph, node)
    if sr.arith == "float32":
        return _float32_requant(graph, node, sr)
    if sr.arith != "integer":
        raise ScheduleError(f"{node.describe()}: requant_arith={sr.arith!r}: use 'integer' or 'float32'")
    w, _b = exact.mac_codes(graph, node)
    b = np.zeros(w.shape[0], dtype=np.int64)
    return w, b, unify_shift(sr.multiplier, sr.shift, sr.offset, Requant(0, sr.rounding, sr.lo, sr.hi))


def _int_bias(graph: Graph, value: str) -> bool:
    return isinstance(graph.value(value).type.format, (FixedPoint, ScaledInt))


def _float32_requant(graph: Graph, node: Node, sr: exact.ScaledRequant) -> tuple[np.ndarray, np.ndarray, Requant]:
    """onnxruntime's float32 requantization: the integer bias stays in the accumulator (as sim.exact
    computes), (M, n) per channel with n >= 0 (a ratio >= 2**24 shifts M up: float32 rounding is
    relative to the leading one, so the result is unchanged), offsets 0."""
    if len(node.inputs) < 3 or not node.inputs[2] or not _int_bias(graph, node.inputs[2]):
        raise ScheduleError(
            f"{node.describe()}: requant_arith='float32' needs an integer bias (onnxruntime's QDQ bias); "
            "quantize this model with requant_arith='integer'"
        )
    w, b = exact.mac_codes(graph, node)
    ms, ns = [], []
    for m, n in zip(sr.multiplier, sr.shift, strict=True):
        if m >= 1 << 24 or float(np.float32(np.ldexp(np.float32(m), -n))) != m * 2.0**-n:
            raise ScheduleError(
                f"{node.describe()}: float32 requantization ratio {m} * 2**-{n} is not a float32 (onnxruntime "
                "never computes one); quantize this model with requant_arith='integer'"
            )
        ms.append(int(m) << max(0, -int(n)))
        ns.append(max(0, int(n)))
    zeros = (0,) * len(ms)
    rq = Requant(max(ns), Rounding.HALF_EVEN, sr.lo, sr.hi, tuple(ms), zeros, None, "float32", tuple(ns))
    return w, b, rq


def _check_scaled_support(graph: Graph, node: Node) -> None:
    """A clear refusal for an op with imported scales that has no hardware yet."""
    if exact.is_fixed_node(graph, node) or node.op in SCALED_OPS:
        pooled = node.op in ("MaxPool", "GlobalMaxPool") and not exact.is_fixed_node(graph, node)
        if pooled and exact.value_format(graph, node.inputs[0]) != exact.value_format(graph, node.outputs[0]):
            raise UnsupportedOpError(
                f"{node.describe()}: max pooling with imported scales passes codes through, so its input "
                "and output formats must be equal; give both QuantizeLinear nodes the same scale"
            )
        return
    what = "an imported rescale" if node.attrs.get("imported_rescale") else node.op
    raise UnsupportedOpError(
        f"{node.describe()}: {what} with imported non-power-of-two scales has no hardware engine yet "
        f"(only {', '.join(SCALED_OPS[:4])} do); it runs in sim.exact only. Quantize the float model with "
        "hwgen (power-of-two scales) or remove the node from the hardware part"
    )


def _weight_bits(w: np.ndarray) -> int:
    """Bits of a weight code in hardware (always signed): schedule.mac_types' weight type."""
    t = int_type_for(int(min(w.min(), 0)), int(max(w.max(), 0)))
    return t.bits if t.signed else t.bits + 1


def _device(config: BuildConfig) -> Device | None:
    return get_device(config.hardware.device) if config.hardware.device else None


def _reuse_for(
    node: Node, w: np.ndarray, config: BuildConfig, target_ii: int, device: Device | None = None
) -> tuple[int, int]:
    """(PE, SIMD) of a dense layer with weights w [out, in]: the explicit reuse, else the fewest
    multipliers whose reuse stays within the target (on a device: the cheapest share of it)."""
    m, k = w.shape
    layer = config.layer(node.name, node.onnx_name)
    if layer.reuse is not None:
        return choose_folding(k, m, layer.reuse, where=node.describe())
    fits = [(r, pe, simd) for r, pe, simd in valid_foldings(k, m) if r <= target_ii]
    if not fits:
        return choose_folding(k, m, 1, where=node.describe())
    if device is not None:
        wb = _weight_bits(w)

        def cost(t: tuple[int, int, int]) -> float:
            per_bank, banks = weight_banks(t[1], t[2], wb)
            return folding_cost(t[1] * t[2], t[0], per_bank * t[2] * wb, device, banks)

        _r, pe, simd = min(fits, key=lambda t: (cost(t), -t[0]))
        return pe, simd
    # balance: the fewest multipliers whose compute time stays within the target interval
    _r, pe, simd = max(fits, key=lambda t: (t[0], t[1]))
    return pe, simd


def _sparse_choice(node: Node, w: np.ndarray, config: BuildConfig, target_ii: int) -> tuple[int, int, str, int] | None:
    """(PEs, index bits, weight coding, max Huffman code length) when this Dense layer goes on the sparse
    engine, else None.

    `[layers.NAME] engine` decides; without it, a weight density below `hardware.sparse_threshold`.
    Without `pes`: the fewest PEs whose non-zero weights per PE fit the target interval (one
    non-zero weight per PE and cycle), so the sparse engine keeps the pace the dense one would.
    The weight coding is the layer's `weight_coding`, else `hardware.weight_coding`; a layer that
    asks for Huffman-coded weights but stays on the dense engine is refused (no dense Huffman engine),
    and so is a `max_code_length` on a layer whose weights are not Huffman-coded (it would do nothing).
    """
    layer = config.layer(node.name, node.onnx_name)
    nonzeros = int(np.count_nonzero(w))
    threshold = config.hardware.sparse_threshold
    if layer.engine == "dense" or (layer.engine is None and not (threshold > 0 and nonzeros < threshold * w.size)):
        asked = _huffman_keys(layer)
        if asked:
            raise ScheduleError(
                f"{node.describe()}: {' and '.join(asked)} needs the sparse engine (Huffman-coded weights), but this "
                f'layer is on the dense engine; add engine = "sparse" to its [layers] table (or lower '
                f"hardware.sparse_threshold)"
            )
        return None
    pes = layer.pes or min(w.shape[0], max(1, -(-nonzeros // max(1, target_ii))))
    coding = layer.weight_coding or config.hardware.weight_coding
    if layer.max_code_length is not None and coding != "huffman":
        raise ScheduleError(
            f"{node.describe()}: max_code_length = {layer.max_code_length} limits Huffman-coded weights, but this "
            f'layer\'s weights are {coding}; add weight_coding = "huffman" to its [layers] table or remove the key'
        )
    return pes, layer.index_bits or DEFAULT_INDEX_BITS, coding, layer.max_code_length or DEFAULT_WEIGHT_MAX_LEN


def _huffman_keys(layer: LayerConfig) -> list[str]:
    """The layer's keys that ask for Huffman-coded weights (as `key = value`)."""
    keys = ['weight_coding = "huffman"'] if layer.weight_coding == "huffman" else []
    if layer.max_code_length is not None:
        keys.append(f"max_code_length = {layer.max_code_length}")
    return keys


def _to_sparse(
    p: DensePlan, pes: int, index_bits: int, weight_coding: str = "plain", max_code_length: int = DEFAULT_WEIGHT_MAX_LEN
) -> SparseDensePlan:
    """The sparse engine computing the dense plan's layer, logged."""
    sp = sparse_from_dense(
        p, pes=pes, index_bits=index_bits, weight_coding=weight_coding, max_code_length=max_code_length
    )
    log.info("%s: sparse engine, %d PEs, density %.3f, %s weights", p.source, sp.pes, sp.density, weight_coding)
    return sp


def _chain(graph: Graph) -> list[Node]:
    """The MAC nodes in stream order; refuses graphs that are not a single chain."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOpError(
            f"model '{graph.name}': the hardware has one input and one output stream; "
            f"this model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs"
        )
    chain: list[Node] = []
    current = graph.inputs[0]
    while current != graph.outputs[0]:
        users = graph.consumers(current)
        if len(users) != 1:
            raise UnsupportedOpError(f"value {current!r} feeds {len(users)} nodes; only chains have hardware yet")
        node = users[0]
        if node.op == "Dense":
            if len(graph.value(node.inputs[0]).type.shape) != 1:
                raise UnsupportedOpError(f"{node.describe()}: a dense engine needs a vector input")
            chain.append(node)
        elif node.op not in FREE_OPS:
            raise UnsupportedOpError(
                f"{node.describe()}: no hardware engine for {node.op} yet; "
                "fuse it into the preceding layer or remove it from the model"
            )
        current = node.outputs[0]
    return chain


def _port(graph: Graph, value: str, taken: set[str]) -> StreamPort:
    fmt = exact.value_format(graph, value)
    t = graph.value(value).type
    frac = fmt.frac if isinstance(fmt, FixedPoint) else 0  # imported scales: codes are integers
    return StreamPort(legalize(value, taken, prefix="v"), value, code_type(fmt), t.size, frac, t.shape)


def _is_dag(graph: Graph) -> bool:
    """True when the graph needs the general dataflow lowering (anything but Dense on vectors)."""
    return any(n.op not in (*FREE_OPS, "Dense") for n in graph.nodes) or any(
        len(graph.value(v).type.shape) > 1 for n in graph.nodes if n.op == "Dense" for v in n.inputs[:1]
    )


def schedule_graph(graph: Graph, config: BuildConfig, top: str | None = None) -> Schedule:
    """The hardware plan of a quantized graph: a chain of dense engines, or a general dataflow graph.

    With `hardware.device` set, the foldings are chosen to fit that device (hwgen.hw.resources.fit_device).
    """
    _check_sparse_requests(graph, config)
    lower = functools.partial(_lower_dag if _is_dag(graph) else _lower_chain, graph, config, top)
    if config.hardware.device:
        from hwgen.hw.resources import fit_device

        return fit_device(graph, config, lower, ii_candidates(graph, config))
    return lower(config.hardware.target_ii or None)


def _check_sparse_requests(graph: Graph, config: BuildConfig) -> None:
    """`engine = "sparse"` (or pes / index_bits / weight_coding / max_code_length) on a layer that is not fully
    connected is a mistake, not a no-op."""
    for node in graph.nodes:
        layer = config.layer(node.name, node.onnx_name)
        asked = [k for k in ("pes", "index_bits", "weight_coding", "max_code_length") if getattr(layer, k) is not None]
        if layer.engine == "sparse":
            asked.insert(0, 'engine = "sparse"')
        if asked and node.op != "Dense":
            raise ScheduleError(
                f"{node.describe()}: {', '.join(asked)} configures the sparse engine, which computes fully "
                f"connected (Dense/Gemm/MatMul) layers only; remove it from this layer's [layers] table"
            )


def ii_candidates(graph: Graph, config: BuildConfig) -> list[int]:
    """Every per-sample cycle count a layer's folding can take: the targets worth trying.

    A dense layer takes reuse = SF*NF cycles per sample, a conv pixels x its reuse; layers with an
    explicit `reuse` in the config keep it and add nothing.
    """
    found: set[int] = set()
    for node in graph.nodes:
        if node.op not in ("Dense", "Conv") or config.layer(node.name, node.onnx_name).reuse is not None:
            continue
        shape = graph.const(node.inputs[1]).shape
        if node.op == "Dense":
            m, k = shape[0], int(np.prod(shape[1:]))
            found.update(r for r, _pe, _simd in valid_foldings(k, m))
        else:
            oc, cg, kh, kw = shape
            _oc, oh, ow = graph.value(node.outputs[0]).type.shape
            divs = [d for d in range(1, oc + 1) if oc % d == 0]
            found.update(
                oh * ow * (oc // pe) * (cg // simd) * kh * kw
                for pe in divs
                for simd in range(1, cg + 1)
                if cg % simd == 0
            )
    return sorted(found)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _lower_chain(
    graph: Graph, config: BuildConfig, top: str | None, target: int | None, *, cheapest: bool = True
) -> Schedule:
    """A chain of dense engines; each layer takes the fewest multipliers whose reuse is <= target
    (on a device and with `cheapest`: the folding taking the smallest share of the device)."""
    chain = _chain(graph)
    if not chain:
        raise ScheduleError(f"model '{graph.name}': no layer to put in hardware")
    taken: set[str] = set()
    top_name = legalize(top or graph.name or "model", taken, prefix="m")
    target = target or max(graph.value(n.inputs[0]).type.size for n in chain)
    device = _device(config) if cheapest else None
    plans: list[DensePlan] = []
    for node in chain:
        w, b, rq = mac_requant(graph, node)
        pe, simd = _reuse_for(node, w, config, target, device)
        plans.append(
            plan_dense(
                legalize(node.name, taken, prefix="l"),
                node.onnx_name or node.name,
                w,
                b,
                code_type(exact.value_format(graph, node.inputs[0])),
                code_type(exact.value_format(graph, node.outputs[0])),
                rq,
                pe=pe,
                simd=simd,
            )
        )
    inp = _port(graph, graph.inputs[0], taken)
    out = _port(graph, graph.outputs[0], taken)
    sched = chain_schedule(top_name, graph.name, plans, inp, out)
    choices = {
        i: _sparse_choice(node, plan.weights, config, target)
        for i, (node, plan) in enumerate(zip(chain, sched.layers, strict=True))
    }
    if any(choices.values()):
        sched = replace_layers(sched, {i: _to_sparse(sched.layers[i], *c) for i, c in choices.items() if c})
    log.info("schedule: %d engines, latency %d cycles, II %d", len(plans), sched.latency, sched.ii)
    return sched


# ---------------------------------------------------------------------------------------------
# General dataflow graphs (CNNs): channels-last streams, forks, residual adds, concat
# ---------------------------------------------------------------------------------------------


@dataclass
class _StreamInfo:
    """How an IR value travels: its stream, the stream's shape, and for vectors the order."""

    stream: str
    shape: tuple[int, ...]  #: stream order: (H, W, C) or (K,)
    perm: np.ndarray | None = None  #: vectors: stream position -> C-order index of the IR tensor


def _stream_shape(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    if len(shape) == 1:
        return shape
    if len(shape) == 3:
        c, h, w = shape
        return (h, w, c)
    raise ScheduleError(
        f"{where}: tensors of per-sample shape {list(shape)} have no stream layout (use [C,H,W] or [K])"
    )


def _hwc_perm(c: int, h: int, w: int) -> np.ndarray | None:
    """Stream position (h, w, c) -> C-order (c, h, w) index, or None when the two orders agree."""
    if c == 1 or h * w == 1:
        return None
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _conv_folding(
    node: Node,
    c_out: int,
    cg: int,
    per_pixel_taps: int,
    pixels: int,
    target: int,
    config: BuildConfig,
    w_bits: int = 8,
    device: Device | None = None,
) -> tuple[int, int]:
    """(PE, SIMD): PE | c_out, SIMD | cg; the fewest multipliers whose cycles fit the target (on
    a device: the cheapest share of its multipliers and block RAM)."""
    divs = lambda n: [d for d in range(1, n + 1) if n % d == 0]  # noqa: E731
    options = [(pe, simd) for pe in divs(c_out) for simd in divs(cg)]
    cycles = lambda o: pixels * (c_out // o[0]) * (cg // o[1]) * per_pixel_taps  # noqa: E731
    layer = config.layer(node.name, node.onnx_name)
    if layer.reuse is not None:
        reuse = layer.reuse
        fit = [o for o in options if (c_out // o[0]) * (cg // o[1]) * per_pixel_taps >= reuse]
        return min(fit, key=lambda o: ((c_out // o[0]) * (cg // o[1]), -o[0])) if fit else (1, 1)
    fit = [o for o in options if cycles(o) <= target]
    if not fit:
        return max(options, key=lambda o: o[0] * o[1])
    if device is not None:
        depth = lambda o: (c_out // o[0]) * (cg // o[1]) * per_pixel_taps  # noqa: E731  # weight ROM words
        n = lambda o: o[0] * o[1]  # noqa: E731
        return min(fit, key=lambda o: (folding_cost(n(o), depth(o), n(o) * w_bits, device), n(o), -o[0]))
    return min(fit, key=lambda o: (o[0] * o[1], -o[0]))


def _lower_dag(
    graph: Graph, config: BuildConfig, top: str | None, target: int | None, *, cheapest: bool = True
) -> Schedule:
    from hwgen.hw.engine_timing import engine_timing, graph_latency
    from hwgen.sim.exact import activation_bounds, clip_bounds, lut_table
    from hwgen.sim.integer_kernels import avgpool_multiplier

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOpError(f"model '{graph.name}': the hardware has one input and one output stream")
    taken: set[str] = set()
    top_name = legalize(top or graph.name or "model", taken, prefix="m")
    target = target or max(v.type.size for v in graph.values.values() if not v.is_const)
    device = _device(config) if cheapest else None
    info: dict[str, _StreamInfo] = {}
    streams: dict[str, Stream] = {}
    engines: list = []

    def new_stream(value: str, shape: tuple[int, ...], perm: np.ndarray | None = None) -> _StreamInfo:
        name = legalize(value, taken, prefix="s")
        streams[name] = Stream(name, value, code_type(exact.value_format(graph, value)), shape)
        info[value] = _StreamInfo(name, shape, perm)
        return info[value]

    x0 = graph.inputs[0]
    new_stream(x0, _stream_shape(graph.value(x0).type.shape, f"input {x0!r}"))
    for node in graph.nodes:
        where = node.describe()
        x = node.inputs[0]
        if x not in info:
            raise ScheduleError(f"{where}: its input {x!r} has no stream")
        src = info[x]
        out_v = node.outputs[0]
        out_shape = graph.value(out_v).type.shape
        name = functools.partial(legalize, node.name, taken, prefix="l")
        common = {"source": node.onnx_name or node.name}
        if node.op in FREE_OPS:
            if len(out_shape) == 1 and len(src.shape) == 3:
                h, w, c = src.shape
                info[out_v] = _StreamInfo(src.stream, (c * h * w,), _hwc_perm(c, h, w))
            elif len(out_shape) == len(src.shape) == 1 or _stream_shape(out_shape, where) == src.shape:
                info[out_v] = _StreamInfo(src.stream, _stream_shape(out_shape, where), src.perm)
            elif len(out_shape) == 3 and out_shape[1] * out_shape[2] == 1 and src.perm is None:
                info[out_v] = _StreamInfo(src.stream, _stream_shape(out_shape, where))
            else:
                raise ScheduleError(f"{where}: a reshape from {src.shape} to {list(out_shape)} reorders the stream")
            continue
        _check_scaled_support(graph, node)
        in_t = code_type(exact.value_format(graph, x))
        out_t = code_type(exact.value_format(graph, out_v))
        if node.op == "Dense":
            w, b, rq = mac_requant(graph, node)
            if src.perm is not None:
                w = w[:, src.perm]  # weights follow the stream's element order
            m = w.shape[0]
            pe, simd = _reuse_for(node, w, config, target, device)
            plan = plan_dense(name(), common["source"], w, b, in_t, out_t, rq, pe=pe, simd=simd)
            choice = _sparse_choice(node, w, config, target)
            plan = _to_sparse(plan, *choice) if choice else plan
            out_info = new_stream(out_v, (m,))
        elif node.op == "WinogradConv":
            if len(src.shape) != 3:
                raise ScheduleError(f"{where}: the Winograd engine takes 2-D images")
            _h, _w, c = src.shape
            oc, oh, ow = out_shape
            th, tw = tile_grid(oh, ow, int(node.attrs.get("tile", winograd.ENGINE_TILE)))
            # one step per (tile, output fold, input fold): the conv folding with a tile as the "pixel"
            w_bits = _weight_bits(dense_codes(graph, node)[0])
            pe, simd = _conv_folding(node, oc, c, 1, th * tw, target, config, w_bits, device)
            plan = winograd.plan_from_node(graph, node, pe=pe, simd=simd, name=name())
            out_info = new_stream(out_v, (oh, ow, oc))
        elif node.op == "Conv":
            if len(src.shape) != 3 or node.attrs.get("dilations", (1, 1)) != (1, 1):
                raise ScheduleError(f"{where}: the conv engine takes 2-D images with dilation 1")
            w, b, rq = mac_requant(graph, node)
            h, wd, c = src.shape
            groups = int(node.attrs.get("group", 1))
            kh, kw = node.attrs["kernel"]
            oc, oh, ow = out_shape
            pe, simd = _conv_folding(node, oc, c // groups, kh * kw, oh * ow, target, config, _weight_bits(w), device)
            if groups > 1 and not (c // groups == 1 and oc // groups == 1) and (oc // groups) % pe:
                pe = math.gcd(pe, oc // groups)
            w_t, b_t, acc_t = mac_types(w, b, in_t)
            rq = with_product_type(rq, *accumulator_range(w.reshape(len(w), -1), b, in_t))
            plan = ConvPlan(
                name=name(),
                channels_in=c,
                channels_out=oc,
                in_h=h,
                in_w=wd,
                out_h=oh,
                out_w=ow,
                kernel=(kh, kw),
                stride=tuple(node.attrs["strides"]),
                pads_begin=tuple(node.attrs["pads_begin"]),
                pads_end=tuple(node.attrs["pads_end"]),
                groups=groups,
                pe=pe,
                simd=simd,
                inp=in_t,
                w=w_t,
                prod=product_type(in_t, w_t),
                acc=acc_t,
                out=out_t,
                bias=b_t,
                requant=rq,
                weights=w,
                biases=b,
                **common,
            )
            out_info = new_stream(out_v, (oh, ow, oc))
        elif node.op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"):
            if len(src.shape) != 3:
                raise ScheduleError(f"{where}: the pooling engine takes 2-D images")
            h, wd, c = src.shape
            is_global = node.op.startswith("Global")
            kernel = (h, wd) if is_global else tuple(node.attrs["kernel"])
            stride = (1, 1) if is_global else tuple(node.attrs["strides"])
            pb = (0, 0) if is_global else tuple(node.attrs["pads_begin"])
            pe_ = (0, 0) if is_global else tuple(node.attrs["pads_end"])
            if not is_global and (node.attrs.get("ceil_mode") or node.attrs.get("dilations", (1, 1)) != (1, 1)):
                raise ScheduleError(f"{where}: the pooling engine has no ceil_mode or dilation")
            kind = "max" if "Max" in node.op else "avg"
            if any(p >= k for p, k in zip(pb + pe_, kernel + kernel, strict=True)):
                raise ScheduleError(f"{where}: padding {pb}/{pe_} as large as the kernel {kernel} gives empty windows")
            n = kernel[0] * kernel[1]
            if kind == "avg" and any(pb + pe_) and not node.attrs.get("count_include_pad", 0):
                raise ScheduleError(f"{where}: padded average pooling must count the padding (count_include_pad=1)")
            mult, shift = avgpool_multiplier(n) if kind == "avg" else (1, 0)
            ends = (in_t.lo * n * mult, in_t.hi * n * mult) if kind == "avg" else (in_t.lo, in_t.hi)
            fmt = exact.value_format(graph, out_v)
            plan = PoolPlan(
                name=name(),
                kind=kind,
                channels=c,
                in_h=h,
                in_w=wd,
                out_h=out_shape[1],
                out_w=out_shape[2],
                kernel=kernel,
                stride=stride,
                pads_begin=pb,
                pads_end=pe_,
                inp=in_t,
                out=out_t,
                acc=int_type_for(min(ends), max(ends)),
                mult=mult,
                shift=shift,
                rounding=Rounding(node.attrs.get("rounding", Rounding.HALF_EVEN)),
                lo=fmt.min_code,
                hi=fmt.max_code,
                **common,
            )
            out_info = new_stream(out_v, (out_shape[1], out_shape[2], c))
        elif node.op == "Add" and len(graph.activations(node)) == 2:
            y = node.inputs[1]
            if info[y].shape != src.shape or (info[y].perm is None) != (src.perm is None):
                raise ScheduleError(f"{where}: the two inputs travel in different stream layouts")
            fa, fb, fo = fixed_format(graph, x), fixed_format(graph, y), fixed_format(graph, out_v)
            f = max(fa.frac, fb.frac)
            b_t = code_type(fb)
            s_lo = (in_t.lo << (f - fa.frac)) + (b_t.lo << (f - fb.frac))
            s_hi = (in_t.hi << (f - fa.frac)) + (b_t.hi << (f - fb.frac))
            lo, hi = activation_bounds(node, fo)
            plan = AddPlan(
                name=name(),
                count=int(np.prod(src.shape)),
                a=in_t,
                b=b_t,
                align_a=f - fa.frac,
                align_b=f - fb.frac,
                sum=IntType(signed_bits_for(s_lo, s_hi), True),
                out=out_t,
                requant=Requant(f - fo.frac, Rounding(node.attrs["rounding"]), lo, hi),
                **common,
            )
            out_info = new_stream(out_v, src.shape, src.perm)
        elif node.op == "Concat":
            if node.attrs["axis"] != 0:
                raise ScheduleError(f"{where}: the concat engine joins channels (axis 1) only")
            fo = fixed_format(graph, out_v)
            parts = []
            for i in node.inputs:
                si = info[i]
                fi = fixed_format(graph, i)
                parts.append(
                    ConcatPart(
                        si.shape[-1],
                        code_type(fi),
                        Requant(fi.frac - fo.frac, Rounding(node.attrs["rounding"]), fo.min_code, fo.max_code),
                    )
                )
                if si.perm is not None or si.shape[:-1] != src.shape[:-1]:
                    raise ScheduleError(f"{where}: inputs of different pixel layouts")
            pixels = int(np.prod(src.shape[:-1]))
            plan = ConcatPlan(name=name(), pixels=pixels, parts=tuple(parts), out=out_t, **common)
            out_info = new_stream(out_v, (*src.shape[:-1], sum(p.channels for p in parts)))
        elif node.op == "Affine" and any(graph.const(c).size > 1 for c in node.inputs[1:]):
            # a per-channel scale/offset (e.g. a Mul by a per-channel constant): multiplier + offset per channel
            plan = channel_affine.plan_from_node(graph, node, src.shape, src.perm, name())
            out_info = new_stream(out_v, src.shape, src.perm)
        elif node.op in ("Relu", "Clip", "Affine", *LUT_OPS):
            fi = fixed_format(graph, x)
            if fi.bits > LUT_MAX_INPUT_BITS:
                raise UnsupportedOpError(
                    f"{where}: a standalone {node.op} is a {2**fi.bits}-entry table over {fi.bits}-bit codes; "
                    f"use at most {LUT_MAX_INPUT_BITS}-bit activations before it or fuse it into the layer before"
                )
            codes = np.arange(fi.min_code, fi.max_code + 1, dtype=np.int64)
            if node.op == "Relu":
                table = np.maximum(codes, 0)
            elif node.op == "Affine":
                table = affine_codes(graph, node, codes)
            elif node.op == "Clip":
                lo, hi = clip_bounds(node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf), fi)
                table = np.clip(codes, lo, hi)
            else:
                table = lut_table(node, fi, fixed_format(graph, out_v))
            plan = LutPlan(name=name(), count=int(np.prod(src.shape)), inp=in_t, out=out_t, table=table, **common)
            out_info = new_stream(out_v, src.shape, src.perm)
        elif node.op == "Softmax":
            # a softmax of a whole vector or of each pixel's channels: runs of consecutive stream elements
            fi, fo = fixed_format(graph, x), fixed_format(graph, out_v)
            length, vectors = softmax_layout(node, graph.value(x).type.shape, where)
            plan = plan_softmax(
                name(), common["source"], inp=in_t, out=out_t, in_frac=fi.frac, out_frac=fo.frac, hi=fo.max_code,
                length=length, vectors=vectors,
            )  # fmt: skip
            out_info = new_stream(out_v, src.shape, src.perm)
        else:
            raise UnsupportedOpError(
                f"{where}: no hardware engine for {node.op}; it runs in sim.reference/sim.exact only. "
                "Remove it from the model's hardware part (e.g. apply Softmax on the host)"
            )
        ins = [info[i].stream for i in graph.activations(node)]
        engines.append(dataclasses.replace(plan, inputs=tuple(ins), outputs=(out_info.stream,)))
    out_v = graph.outputs[0]
    if info[out_v].perm is not None:
        raise ScheduleError(f"output {out_v!r} leaves the hardware in channels-last order; end with a Dense/GAP")
    engines, streams = _insert_forks(engines, streams, taken)
    for i, p in enumerate(engines):
        t = engine_timing(p)
        engines[i] = dataclasses.replace(p, latency=t.latency, ii=t.ii)
    in_stream = info[x0].stream
    out_stream = info[out_v].stream
    latency = graph_latency(engines, in_stream, streams[in_stream].count, out_stream)
    port_in = _port(graph, x0, set())
    port_out = _port(graph, out_v, set())
    port_in = dataclasses.replace(port_in, name=in_stream)
    port_out = dataclasses.replace(port_out, name=out_stream)
    digest = model_hash(
        *[a for p in engines for a in (getattr(p, "weights", np.zeros(0)), getattr(p, "biases", np.zeros(0)))],
        extra=repr([(type(p).__name__, p.name, p.inputs, p.outputs) for p in engines]),
    )
    return Schedule(
        top=top_name,
        model=graph.name,
        model_hash=digest,
        input=port_in,
        output=port_out,
        layers=tuple(engines),
        latency=latency,
        ii=max(p.ii for p in engines),
        streams=tuple(streams.values()),
    )


def _insert_forks(engines: list, streams: dict[str, Stream], taken: set[str]) -> tuple[list, dict[str, Stream]]:
    """A stream read by several engines gets a fork with one FIFO per reader.

    Each fork output FIFO holds a whole sample (`count` elements): then no branch can stall
    another, whatever the engines' latencies (deadlock-free by construction; see the note in
    the issue tracker for the tighter depth the timing model could give).
    """
    readers: dict[str, list[int]] = {}
    for i, p in enumerate(engines):
        for s in p.inputs:
            readers.setdefault(s, []).append(i)
    out = list(engines)
    new_streams = dict(streams)
    forks: list[tuple[int, ForkPlan]] = []
    for s, users in readers.items():
        if len(users) < 2:
            continue
        st = streams[s]
        outs = []
        for u in users:
            branch = legalize(f"{s}_to_{engines[u].name}", taken, prefix="s")
            new_streams[branch] = dataclasses.replace(st, name=branch, depth=st.count + 2)
            out[u] = dataclasses.replace(out[u], inputs=tuple(branch if i == s else i for i in out[u].inputs))
            outs.append(branch)
        fork = ForkPlan(
            name=legalize(f"fork_{s}", taken, prefix="f"),
            source=st.source,
            elem=st.elem,
            count=st.count,
            inputs=(s,),
            outputs=tuple(outs),
        )
        producer = next((i for i, p in enumerate(engines) if s in p.outputs), -1)
        forks.append((producer, fork))
    for pos, fork in sorted(forks, key=lambda t: t[0], reverse=True):
        out.insert(pos + 1, fork)
    return out, new_streams
