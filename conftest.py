"""Suite-wide settings for `tests/` and `rtl_tests/`.

BLAS gets one thread: the suite runs beside simulators and compilers on 2-core machines, where two
OpenBLAS threads fighting each other made one 300x784 SVD take 15 s instead of 0.1 s.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

_BLAS_ONE_THREAD = threadpool_limits(limits=1, user_api="blas")
