"""The device database: lookups by every name a user types, clear errors, self-consistent figures."""

from __future__ import annotations

import pytest

from hwgen.config import HardwareConfig
from hwgen.errors import ConfigError
from hwgen.hw.devices import DEVICES, RESOURCES, Device, devices, get_device


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lfe5u-85f", "lfe5u-85f"),
        ("LFE5U-85F", "lfe5u-85f"),
        (" lfe5u-45f ", "lfe5u-45f"),
        ("85k", "lfe5u-85f"),
        ("LFE5U-85F-6BG381C", "lfe5u-85f"),  # the full part: package and speed grade
        ("up5k", "ice40up5k"),
        ("ice40hx8k", "ice40hx8k"),
        ("xc7a35tcpg236-1", "xc7a35t"),
        ("xc7a100t", "xc7a100t"),
        ("xczu7ev-ffvc1156-2-e", "xczu7ev"),
        ("xcu250-figd2104-2L-e", "xcu250"),
    ],
)
def test_lookup(name: str, expected: str) -> None:
    assert get_device(name).name == expected


def test_the_default_part_is_a_known_device() -> None:
    assert get_device(HardwareConfig().part).name == "xcu250"


@pytest.mark.parametrize("name", ["lfe5u-99f", "xc7a", "", "virtex"])
def test_unknown_device_lists_the_known_ones(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown device '{name}'") as e:
        get_device(name)
    for known in DEVICES:
        assert known in str(e.value)


def test_data_sheet_figures() -> None:
    """Spot checks against the data sheets (and nextpnr's own device database for Lattice)."""
    d = get_device("lfe5u-85f")
    assert (d.lut, d.ff, d.dsp, d.bram, d.bram_bits) == (83_640, 83_640, 156, 208, 18_432)
    assert d.nextpnr_args == ("--85k", "--package", "CABGA381")
    assert get_device("lfe5u-45f").dsp == 72 and get_device("lfe5u-25f").bram == 56
    up = get_device("ice40up5k")
    assert (up.lut, up.dsp, up.bram, up.uram) == (5_280, 8, 30, 4)
    assert get_device("ice40hx8k").dsp == 0
    a35 = get_device("xc7a35t")
    assert (a35.lut, a35.ff, a35.dsp, a35.bram) == (20_800, 41_600, 90, 50)
    u250 = get_device("xcu250")
    assert (u250.lut, u250.dsp, u250.bram, u250.uram) == (1_728_000, 12_288, 2_688, 1_280)


@pytest.mark.parametrize("dev", devices(), ids=lambda d: d.name)
def test_every_device_is_consistent(dev: Device) -> None:
    assert dev.name == dev.name.lower() and dev.source
    assert get_device(dev.part) is dev and get_device(dev.name) is dev
    assert dev.family in ("ecp5", "ice40", "xilinx")
    cap = dev.capacity()
    assert list(cap) == [r for r in RESOURCES if r in cap]
    assert all(v > 0 for k, v in cap.items() if k != "DSP")
    assert bool(dev.nextpnr_args) == (dev.family != "xilinx")
    if dev.family != "xilinx":  # Lattice: a slice / logic cell pairs each LUT4 with one FF
        assert dev.ff == dev.lut
    assert ("URAM" in cap) == (dev.uram > 0) == (dev.uram_bits > 0)


def test_families() -> None:
    assert [d.name for d in devices("ecp5")] == ["lfe5u-12f", "lfe5u-25f", "lfe5u-45f", "lfe5u-85f"]
    assert {d.family for d in devices()} == {"ecp5", "ice40", "xilinx"}
