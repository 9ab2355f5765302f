"""load_data: the .npz files given to --calib/--data are checked against the model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwgen.data import load_data
from hwgen.errors import DataError
from hwgen.ir.graph import Graph, TensorType, Value


def graph(shape: tuple[int, ...] = (1, 4, 4)) -> Graph:
    g = Graph("g")
    g.add_value(Value("x", TensorType(shape)))
    g.inputs = ["x"]
    return g


def npz(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> Path:
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_good_file(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 1, 4, 4)).astype(np.float32)
    y = np.arange(5, dtype=np.int32)
    gx, gy = load_data(npz(tmp_path, x=x, y=y), graph())
    assert gx.dtype == np.float64 and gx.shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(gx, x.astype(np.float64))
    assert gy.dtype == np.int64 and gy.tolist() == [0, 1, 2, 3, 4]


def test_labels_are_optional_and_may_be_a_column(tmp_path: Path) -> None:
    x = np.zeros((3, 1, 4, 4))
    assert load_data(npz(tmp_path, x=x), graph())[1] is None
    _, y = load_data(npz(tmp_path, "col.npz", x=x, y=np.array([[1], [2], [3]])), graph())
    assert y.tolist() == [1, 2, 3]


def test_integer_pixels_become_floats(tmp_path: Path) -> None:
    x = np.full((2, 1, 4, 4), 255, dtype=np.uint8)
    gx, _ = load_data(npz(tmp_path, x=x), graph())
    assert gx.dtype == np.float64 and gx.max() == 255.0


def test_single_sample_without_batch_axis(tmp_path: Path) -> None:
    x = np.ones((1, 4, 4))
    gx, gy = load_data(npz(tmp_path, x=x, y=np.array(7)), graph())
    assert gx.shape == (1, 1, 4, 4)
    assert gy.tolist() == [7]


def test_bundled_files_load(mnist_test) -> None:
    from conftest import LENET_CALIB, LENET_TEST

    g = graph((1, 28, 28))
    x, y = load_data(LENET_TEST, g)
    assert x.shape == (1000, 1, 28, 28) and y.shape == (1000,)
    np.testing.assert_array_equal(x, mnist_test[0].astype(np.float64))
    assert load_data(LENET_CALIB, g)[0].shape == (512, 1, 28, 28)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((2, 1, 4, 4))}, r"no array named 'x' \(found \['images'\]\); save inputs as x=\.\.\."),
        ({"x": np.zeros((2, 4, 4))}, r"x has shape \[2, 4, 4\]; the model takes \[N, 1, 4, 4\]"),
        ({"x": np.zeros((2, 1, 4, 5))}, r"x has shape \[2, 1, 4, 5\]"),
        ({"x": np.zeros(16)}, r"x has shape \[16\]"),
        ({"x": np.zeros((0, 1, 4, 4))}, r"x holds no samples"),
        ({"x": np.full((2, 1, 4, 4), np.nan)}, r"x contains NaN or infinity"),
        ({"x": np.full((2, 1, 4, 4), np.inf)}, r"x contains NaN or infinity"),
        ({"x": np.zeros((2, 1, 4, 4), dtype=bool)}, r"x must be numeric, got dtype bool"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.arange(3)}, r"y has 3 labels for 2 samples"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.array([0.5, 1.0])}, r"y must hold integer class labels, got dtype f"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.array(["a", "b"])}, r"y must hold integer class labels"),
    ],
    ids=[
        "no-x",
        "missing-axis",
        "wrong-shape",
        "flat",
        "empty",
        "nan",
        "inf",
        "bool",
        "label-count",
        "float-labels",
        "string-labels",
    ],
)
def test_bad_contents(tmp_path: Path, arrays: dict, message: str) -> None:
    p = npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_data(p, graph())
    assert str(e.value).startswith(str(p))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.npz: no such data file"):
        load_data(tmp_path / "nope.npz", graph())


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip file at all", b"PK\x03\x04truncated", "half"],
    ids=["empty", "text", "bad-zip", "truncated"],
)
def test_unreadable_file(tmp_path: Path, content: bytes | str) -> None:
    p = tmp_path / "bad.npz"
    if content == "half":
        good = npz(tmp_path, "good.npz", x=np.zeros((50, 1, 4, 4))).read_bytes()
        content = good[: len(good) // 2]
    p.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.npz: not a readable \.npz file"):
        load_data(p, graph())


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match=r"not a readable \.npz file"):
        load_data(p, graph())
