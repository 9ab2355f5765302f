"""The generic whole-model cocotb testbench: drives a generated design's AXI4-Stream ports.

It knows nothing of the model. `hwgen.hw.rtl_sim.run_rtl` writes a JSON configuration (port
widths, element counts, stall patterns, seed, timeout, where the vectors and results live) and
points the environment variable HWGEN_BENCH at it; this bench reads it, runs, and writes the
collected output codes and handshake cycles back for run_rtl to check against the golden model.

Protocol, per clock cycle (one loop iteration, one `await FallingEdge`):
  - at the falling edge the bench drives s_axis_tvalid/tdata/tlast and m_axis_tready for the next
    rising edge, then samples s_axis_tready, m_axis_tvalid/tdata/tlast after they settle
    (ReadOnly), so the handshakes of that rising edge are known exactly;
  - cycles in which no handshake is possible (nothing to send or tready low, and tvalid low) are
    skipped by waiting for tready/tvalid to change instead of stepping the clock from Python.
Phase 1 sends sample 0 alone with no stalls and measures its latency (edges from the first input
beat accepted to its last output beat accepted). Phase 2 streams the other samples with the
configured source idles and sink back-pressure ("none", "random" 50 %, "periodic").
The bench checks tlast on every output beat and the sign/zero extension of the output tdata.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import Edge, FallingEdge, First, ReadOnly, RisingEdge, Timer

#: clock period of the bench, ns (the cycle counts do not depend on it)
CLOCK_NS = 10

#: periodic patterns: (period, active cycles): the source sends in 3 of every 4 cycles, the
#: sink is ready in 2 of every 5 (coprime periods, so the two stall patterns drift past each other)
SOURCE_PERIOD = (4, 3)
SINK_PERIOD = (5, 2)


def _pattern(mode: str, period: tuple[int, int], rng: random.Random):
    """A function cycle -> active? for a stall mode."""
    if mode == "none":
        return lambda n: True
    if mode == "random":
        return lambda n: rng.random() < 0.5
    if mode == "periodic":
        p, on = period
        return lambda n: n % p < on
    raise ValueError(f"unknown stall mode {mode!r}: use none, random or periodic")


class StreamBench:
    """Source + sink + cycle counter in one per-cycle loop (cheap in Python)."""

    def __init__(self, dut, cfg: dict, x: np.ndarray) -> None:
        self.dut = dut
        self.cfg = cfg
        self.n_in, self.n_out = cfg["in_count"], cfg["out_count"]
        self.in_mask = (1 << cfg["in_bits"]) - 1
        self.pad_bits = cfg["in_tw"] - cfg["in_bits"]
        self.out_tw, self.out_signed = cfg["out_tw"], cfg["out_signed"]
        self.out_lo, self.out_hi = cfg["out_lo"], cfg["out_hi"]
        rng = random.Random(cfg["seed"])
        # input beats: the code's low bits; the padding bits carry seeded garbage the DUT ignores
        self.beats = [
            (int(v) & self.in_mask) | (rng.getrandbits(self.pad_bits) << cfg["in_bits"] if self.pad_bits else 0)
            for v in x.reshape(-1).tolist()
        ]
        self.in_cycles: list[int] = []
        self.out_cycles: list[int] = []
        self.outputs: list[int] = []
        self.errors: list[str] = []
        self.t0_ps = 0
        self.period_ps = CLOCK_NS * 1000
        self.cycle = 0  # index of the next rising edge, counted from the first falling edge after reset
        self._driven = {"valid": -1, "ready": -1}

    def _drive(self, valid: int, data: int, last: int, ready: int) -> None:
        d = self.dut
        if valid:
            d.s_axis_tdata.value = data
            d.s_axis_tlast.value = last
        if valid != self._driven["valid"]:
            d.s_axis_tvalid.value = valid
            self._driven["valid"] = valid
        if ready != self._driven["ready"]:
            d.m_axis_tready.value = ready
            self._driven["ready"] = ready

    def _decode(self, raw: int) -> int:
        v = raw - (1 << self.out_tw) if self.out_signed and raw >> (self.out_tw - 1) else raw
        if not self.out_lo <= v <= self.out_hi and len(self.errors) < 20:
            self.errors.append(
                f"output beat {len(self.outputs)}: tdata 0x{raw:x} is not a "
                f"{'sign' if self.out_signed else 'zero'}-extended code in [{self.out_lo}, {self.out_hi}]"
            )
        return v

    async def stream(self, first: int, stop: int, idle: str, backpressure: str, rng: random.Random) -> None:
        """Send samples [first, stop) and collect their outputs.

        Returns once every input beat is sent and every output beat received: a design may emit
        its last output before it takes its last input (inputs no window reads).
        """
        d = self.dut
        src_on = _pattern(idle, SOURCE_PERIOD, rng)
        snk_on = _pattern(backpressure, SINK_PERIOD, rng)
        nxt, end = first * self.n_in, stop * self.n_in
        want = stop * self.n_out
        timeout = self.cfg["timeout_cycles"]
        while len(self.outputs) < want or nxt < end:
            n = self.cycle
            if n > timeout:
                raise TimeoutError(
                    f"no progress: {len(self.outputs)} of {want} output beats, {nxt} of {end} input beats after "
                    f"{n} cycles (timeout {timeout} = schedule latency/II x margin); the design may deadlock"
                )
            valid = 1 if nxt < end and src_on(n) else 0
            ready = 1 if snk_on(n) else 0
            beat = self.beats[nxt] if valid else 0
            self._drive(valid, beat, 1 if valid and (nxt + 1) % self.n_in == 0 else 0, ready)
            await ReadOnly()
            s_ready = d.s_axis_tready.value == 1
            m_valid = d.m_axis_tvalid.value == 1
            if valid and s_ready:
                self.in_cycles.append(n)
                nxt += 1
            if ready and m_valid:
                k = len(self.outputs)
                self.outputs.append(self._decode(d.m_axis_tdata.value.to_unsigned()))
                self.out_cycles.append(n)
                want_last = k % self.n_out == self.n_out - 1
                if (d.m_axis_tlast.value == 1) != want_last and len(self.errors) < 20:
                    self.errors.append(f"output beat {k}: tlast={int(d.m_axis_tlast.value)}, expected {int(want_last)}")
            if not m_valid and (nxt >= end or not s_ready) and not (valid and s_ready):
                # nothing can be accepted until the DUT raises tvalid or tready: skip those cycles
                triggers = [Edge(d.m_axis_tvalid), Timer((timeout - n + 2) * self.period_ps, unit="ps")]
                if nxt < end:
                    triggers.append(Edge(d.s_axis_tready))
                await First(*triggers)
            await FallingEdge(d.ap_clk)
            self.cycle = round((get_sim_time(unit="ps") - self.t0_ps) / self.period_ps)


@cocotb.test()
async def model_bench(dut) -> None:
    """Run the vectors of $HWGEN_BENCH through the design; write outputs and cycle counts."""
    cfg = json.loads(Path(os.environ["HWGEN_BENCH"]).read_text())
    x = np.load(cfg["vectors"])
    n_samples = x.shape[0]
    Clock(dut.ap_clk, CLOCK_NS, unit="ns").start()
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tdata.value = 0
    dut.s_axis_tlast.value = 0
    dut.m_axis_tready.value = 0
    dut.ap_rst_n.value = 0
    for _ in range(4):
        await RisingEdge(dut.ap_clk)
    dut.ap_rst_n.value = 1
    await FallingEdge(dut.ap_clk)

    bench = StreamBench(dut, cfg, x)
    bench.t0_ps = get_sim_time(unit="ps")
    rng = random.Random(cfg["seed"] + 1)
    wall = time.perf_counter()
    status = "ok"
    try:
        # phase 1: sample 0 alone, free-flowing, for the latency
        await bench.stream(0, 1, "none", "none", rng)
        # phase 2: the rest, with the configured stalls
        if n_samples > 1:
            await bench.stream(1, n_samples, cfg["idle"], cfg["backpressure"], rng)
    except TimeoutError as e:
        status = f"timeout: {e}"
    wall = time.perf_counter() - wall

    n_out = cfg["out_count"]
    first_out = n_out - 1
    latency = bench.out_cycles[first_out] - bench.in_cycles[0] if len(bench.out_cycles) > first_out else -1
    outputs = np.zeros((n_samples, n_out), dtype=np.int64)
    got = np.asarray(bench.outputs, dtype=np.int64)
    outputs.reshape(-1)[: got.size] = got
    np.savez(
        cfg["results_npz"],
        outputs=outputs,
        in_cycles=np.asarray(bench.in_cycles, dtype=np.int64),
        out_cycles=np.asarray(bench.out_cycles, dtype=np.int64),
    )
    summary = {
        "status": status,
        "errors": bench.errors,
        "latency_cycles": latency,
        "cycles_total": (bench.out_cycles[-1] - bench.in_cycles[0]) if bench.out_cycles else -1,
        "sim_cycles": bench.cycle,
        "loop_seconds": wall,
        "outputs_received": len(bench.outputs),
    }
    Path(cfg["results_json"]).write_text(json.dumps(summary, indent=1))
    assert status == "ok", status
    assert not bench.errors, bench.errors[0]
