"""The cycle model: closed forms against the recurrences they summarise.

The RTL tests (rtl_tests/test_dense.py) hold the real engines to these numbers; here the algebra
of hwgen.hw.timing is checked against the step-by-step description in its docstring.
"""

from __future__ import annotations

import itertools

import pytest

from hwgen.hw import timing
from hwgen.hw.schedule import valid_foldings


def tail_by_recurrence(k: int, m: int, pe: int, simd: int) -> int:
    """X from the module docstring, fold by fold: I_f = E + (f+1)SF, L_f = max(I_f + P, L_{f-1} + PE)."""
    sf, nf, p = k // simd, m // pe, timing.dense_pipeline(simd)
    e, last = 0, None
    for f in range(nf):
        ready = e + (f + 1) * sf + p
        last = ready if last is None else max(ready, last + pe)
    assert last is not None
    return last + pe - e


SHAPES = [(1, 1), (4, 4), (7, 5), (12, 10), (16, 9), (64, 6), (100, 10), (300, 100), (784, 300)]


@pytest.mark.parametrize(("k", "m"), SHAPES)
def test_tail_closed_form_equals_recurrence(k: int, m: int) -> None:
    for _r, pe, simd in valid_foldings(k, m):
        t = timing.dense_timing(k, m, pe, simd)
        assert t.tail == tail_by_recurrence(k, m, pe, simd), (k, m, pe, simd)
        assert t.latency == k - 1 + t.tail
        assert t.ii == max(k, (k // simd) * (m // pe), m)
        assert 0 < t.first_out <= t.latency


@pytest.mark.parametrize(
    ("simd", "levels", "stages"),
    [(1, 0, 0), (2, 1, 1), (3, 2, 1), (4, 2, 1), (5, 3, 2), (8, 3, 2), (9, 4, 2), (16, 4, 2), (17, 5, 3), (784, 10, 5)],
)
def test_adder_tree_shape(simd: int, levels: int, stages: int) -> None:
    assert timing.tree_levels(simd) == levels
    assert timing.tree_stages(simd) == stages
    assert timing.dense_pipeline(simd) == timing.DENSE_FIXED_STAGES + stages


@pytest.mark.parametrize(("k", "m"), SHAPES)
def test_output_fifo_depth_covers_the_credit_round_trip(k: int, m: int) -> None:
    """The depth the docstring derives: no fold waits for a credit when the sink is free."""
    for _r, pe, simd in valid_foldings(k, m):
        sf, p = k // simd, timing.dense_pipeline(simd)
        d = timing.dense_out_fifo_depth(k, m, pe, simd)
        assert d >= 1
        if pe > sf:
            # a slot returned at a pop is refilled SF+P edges later; the serializer needs a word every PE
            assert d * pe >= sf + p and (d - 1) * pe < sf + p
        else:
            # folds start every SF edges and leave the FIFO SF-1+P edges after they start: fold g-d
            # has left (its credit usable) before fold g starts, fold g-d+1 may not have (minimal)
            assert d * sf > sf - 1 + p
            assert (d - 1) * sf <= sf - 1 + p


def test_chain_latency_adds_tails() -> None:
    engines = [(784, 300, 300, 1), (300, 100, 10, 3), (100, 10, 1, 1)]
    tails = [timing.dense_timing(*e).tail for e in engines]
    assert timing.chain_latency(engines) == 784 - 1 + sum(tails)
    assert timing.chain_latency(engines[:1]) == timing.dense_timing(*engines[0]).latency
    assert timing.chain_latency([]) == 0


def test_serializer_bound_latency_grows_with_pe() -> None:
    """With PE > SF the PE results of each fold leave one per cycle: the tail is output-bound."""
    for pe, sf in itertools.product([2, 4, 8], [1]):
        k, m = sf * 4, pe * 3
        t = timing.dense_timing(k, m, pe, 4)
        assert t.tail == timing.dense_pipeline(4) + sf + pe + 2 * pe
