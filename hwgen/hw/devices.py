"""The FPGA devices hwgen knows by their resources, so a design can be measured against a capacity.

Figures are the vendors' public data sheets (the source of each family is named on its entries);
where nextpnr's own device database counts a resource, its figure was checked to agree (ECP5: the
`available` counts of `nextpnr-ecp5 --report`). Resource names are the keys of report.json's
`hardware.resources`: LUT (LUT4 on Lattice, LUT6 on Xilinx), FF, DSP (hard multipliers: ECP5
MULT18X18D, iCE40 SB_MAC16, Xilinx DSP48), BRAM (block RAMs: ECP5 DP16KD 18 Kbit, iCE40 SB_RAM40_4K
4 Kbit, Xilinx RAMB36 36 Kbit) and, where the device has one, a large single-port RAM (URAM).
"""

from __future__ import annotations

from dataclasses import dataclass

from hwgen.errors import ConfigError

#: the resources a device has and a report counts, in table order
RESOURCES = ("LUT", "FF", "DSP", "BRAM", "URAM")


@dataclass(frozen=True)
class Device:
    """One FPGA part: what it holds, and how the tools that target it name it."""

    name: str  #: the name hwgen accepts (lower case), e.g. "lfe5u-85f"
    family: str  #: "ecp5" | "ice40" | "xilinx": which synthesis flow can target it
    part: str  #: the full part name for the vendor's tools (package and speed grade included)
    lut: int  #: look-up tables (LUT4 on Lattice, LUT6 on Xilinx)
    ff: int  #: flip-flops
    dsp: int  #: hard multipliers (MULT18X18D, SB_MAC16, DSP48E1/E2)
    bram: int  #: block RAMs
    bram_bits: int  #: bits of one block RAM (with parity bits where the data sheet counts them)
    uram: int = 0  #: large RAMs (iCE40 UP SPRAM 256 Kbit, Xilinx UltraRAM 288 Kbit)
    uram_bits: int = 0
    #: nextpnr device and package options (Lattice parts only)
    nextpnr_args: tuple[str, ...] = ()
    source: str = ""  #: the data sheet the figures come from
    dsp_cell: str = "DSP48"  #: what the vendor calls one hard multiplier (for messages)
    bram_cell: str = "RAMB36"  #: what the vendor calls one block RAM
    #: (depth, width) configurations of one block RAM: how it packs words (widths with parity bits)
    bram_shapes: tuple[tuple[int, int], ...] = ()
    lut_inputs: int = 6  #: LUT4 (Lattice) or LUT6 (Xilinx): how many ROM bits one LUT holds is 2**lut_inputs

    def capacity(self) -> dict[str, int]:
        """Available count of each resource in RESOURCES (URAM only when the device has one)."""
        cap = {"LUT": self.lut, "FF": self.ff, "DSP": self.dsp, "BRAM": self.bram}
        if self.uram:
            cap["URAM"] = self.uram
        return cap


_ECP5 = "Lattice FPGA-DS-02012 (ECP5 and ECP5-5G Family Data Sheet), Table 1.1"
_ICE40_HX = "Lattice FPGA-DS-02029 (iCE40 LP/HX Family Data Sheet), Table 1.1"
_ICE40_UP = "Lattice FPGA-DS-02008 (iCE40 UltraPlus Family Data Sheet), Table 1.1"
_XC7 = "AMD/Xilinx DS180 (7 Series FPGAs Data Sheet: Overview), Table 3 (Artix-7)"
_ZUP = "AMD/Xilinx DS891 (Zynq UltraScale+ MPSoC Data Sheet: Overview), EV devices"
_U250 = "AMD/Xilinx DS962 (Alveo U200/U250 Data Sheet) and DS890 (UltraScale+ VU13P-class die)"

# How each family's block RAM packs words (the configurations Yosys maps memories onto): ECP5 sysMEM
# DP16KD (PDPW16KD for the 36-bit width of a one-read-port memory), iCE40 SB_RAM40_4K, Xilinx RAMB36E1/E2.
_ECP5_CELLS: dict = {
    "dsp_cell": "MULT18X18D",
    "bram_cell": "DP16KD",
    "lut_inputs": 4,
    "bram_shapes": ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)),
}
_ICE40_CELLS: dict = {
    "dsp_cell": "SB_MAC16",
    "bram_cell": "SB_RAM40_4K",
    "lut_inputs": 4,
    "bram_shapes": ((2048, 2), (1024, 4), (512, 8), (256, 16)),
}
_XILINX_CELLS: dict = {
    "dsp_cell": "DSP48", "bram_cell": "RAMB36", "lut_inputs": 6,
    "bram_shapes": ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36), (512, 72)),
}  # fmt: skip

# ECP5: a slice is 2 LUT4 + 2 FF, so FF == LUT. The 12F is sold as 12K LUTs (taken as 12,288) and 32 EBR,
# but nextpnr --12k places on the 25F die it shares (24288 TRELLIS_COMB, 56 DP16KD): the data sheet wins
# here, so pnr refuses a 12F design past the data-sheet figures. EBR: sysMEM DP16KD blocks of 18 Kbit.
# CABGA381 is offered for every size (and is nextpnr's default package).
_DEVICES: tuple[Device, ...] = (
    Device("lfe5u-12f", "ecp5", "LFE5U-12F-6BG381C", 12_288, 12_288, 28, 32, 18_432,
           nextpnr_args=("--12k", "--package", "CABGA381"), source=_ECP5, **_ECP5_CELLS),
    Device("lfe5u-25f", "ecp5", "LFE5U-25F-6BG381C", 24_288, 24_288, 28, 56, 18_432,
           nextpnr_args=("--25k", "--package", "CABGA381"), source=_ECP5, **_ECP5_CELLS),
    Device("lfe5u-45f", "ecp5", "LFE5U-45F-6BG381C", 43_848, 43_848, 72, 108, 18_432,
           nextpnr_args=("--45k", "--package", "CABGA381"), source=_ECP5, **_ECP5_CELLS),
    Device("lfe5u-85f", "ecp5", "LFE5U-85F-6BG381C", 83_640, 83_640, 156, 208, 18_432,
           nextpnr_args=("--85k", "--package", "CABGA381"), source=_ECP5, **_ECP5_CELLS),
    # iCE40: a logic cell is one LUT4 + one FF; EBR = SB_RAM40_4K (4 Kbit); HX has no multiplier.
    Device("ice40hx8k", "ice40", "iCE40HX8K-CT256", 7_680, 7_680, 0, 32, 4_096,
           nextpnr_args=("--hx8k", "--package", "ct256"), source=_ICE40_HX, **_ICE40_CELLS),
    Device("ice40up5k", "ice40", "iCE40UP5K-SG48I", 5_280, 5_280, 8, 30, 4_096, uram=4, uram_bits=262_144,
           nextpnr_args=("--up5k", "--package", "sg48"), source=_ICE40_UP, **_ICE40_CELLS),
    # Xilinx: LUT6 = slices * 4, FF = slices * 8; BRAM in RAMB36 blocks (each two RAMB18).
    Device("xc7a35t", "xilinx", "xc7a35tcpg236-1", 20_800, 41_600, 90, 50, 36_864, source=_XC7, **_XILINX_CELLS),
    Device("xc7a100t", "xilinx", "xc7a100tcsg324-1", 63_400, 126_800, 240, 135, 36_864, source=_XC7, **_XILINX_CELLS),
    Device("xczu7ev", "xilinx", "xczu7ev-ffvc1156-2-e", 230_400, 460_800, 1_728, 312, 36_864,
           uram=96, uram_bits=294_912, source=_ZUP, **_XILINX_CELLS),
    Device("xcu250", "xilinx", "xcu250-figd2104-2L-e", 1_728_000, 3_456_000, 12_288, 2_688, 36_864,
           uram=1_280, uram_bits=294_912, source=_U250, **_XILINX_CELLS),
)  # fmt: skip

DEVICES: dict[str, Device] = {d.name: d for d in _DEVICES}
#: short names people type (nextpnr's flags, board-style names)
_ALIASES = {
    "12k": "lfe5u-12f", "25k": "lfe5u-25f", "45k": "lfe5u-45f", "85k": "lfe5u-85f",
    "hx8k": "ice40hx8k", "up5k": "ice40up5k",
}  # fmt: skip


def get_device(name: str) -> Device:
    """The device called `name`: hwgen's name, a short alias (85k, up5k) or a full vendor part
    (LFE5U-85F-6BG381C, xcu250-figd2104-2L-e), in any case."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in DEVICES:
        return DEVICES[key]
    for dev in _DEVICES:  # a full part name begins with the device name or equals the stored part
        if key == dev.part.lower() or (key.startswith(dev.name) and len(key) > len(dev.name)):
            return dev
    known = ", ".join(DEVICES)
    raise ConfigError(
        f"unknown device '{name}': known devices are {known} (a full part name such as "
        f"xc7a35tcpg236-1 works too); add it to hwgen/hw/devices.py with its data-sheet figures"
    )


def devices(family: str | None = None) -> list[Device]:
    """Every known device, or those of one family, in table order."""
    return [d for d in _DEVICES if family is None or d.family == family]


__all__ = ["DEVICES", "RESOURCES", "Device", "devices", "get_device"]
