import numpy as np
import pytest

from geomamba.data.errors import DataError
from geomamba.data.labels import IGNORE_INDEX, LabelMapping


def test_0_255_and_0_1_map_to_class_ids():
    m = LabelMapping()
    np.testing.assert_array_equal(m.apply(np.array([[0, 255]], np.uint8)), [[0, 1]])
    np.testing.assert_array_equal(m.apply(np.array([[1, 0]], np.uint8)), [[1, 0]])


def test_ignore_value():
    m = LabelMapping(ignore_value=255)
    np.testing.assert_array_equal(m.apply(np.array([[0, 1, 255]], np.uint8)), [[0, 1, IGNORE_INDEX]])
    m2 = LabelMapping(ignore_value=2)
    np.testing.assert_array_equal(m2.apply(np.array([[2, 255, 0]], np.uint8)), [[IGNORE_INDEX, 1, 0]])
    with pytest.raises(DataError, match="is a class value"):
        LabelMapping(ignore_value=1)


def test_bad_values_and_ambiguous_labels():
    m = LabelMapping()
    assert "label values 3, 128 not allowed" in m.problem(np.array([0, 3, 128, 255]))
    assert "mixes values 1 and 255" in m.problem(np.array([0, 1, 255]))
    with pytest.raises(DataError, match=r"lab\.png: label values 7"):
        m.apply(np.array([[7]], np.uint8), "lab.png")
    rgb = np.stack([np.array([[0, 255]], np.uint8)] * 3)
    np.testing.assert_array_equal(m.apply(rgb), [[0, 1]])
    rgb[1, 0, 0] = 255
    with pytest.raises(DataError, match="3 different bands"):
        m.apply(rgb)
