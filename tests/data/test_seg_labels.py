"""Segmentation labels: ISPRS palette decoding, class-id labels (LoveDA no-data), clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from geomamba.data.errors import DataError
from geomamba.data.seg_labels import (
    ISPRS_CLASSES,
    ISPRS_IGNORE_COLOURS,
    ISPRS_PALETTE,
    PALETTES,
    SegmentationLabels,
    decode_palette,
)

ISPRS = SegmentationLabels(6, "rgb", ISPRS_PALETTE, ISPRS_IGNORE_COLOURS)


def _rgb(colours) -> np.ndarray:
    """A (3, 2, N) label: two rows of the given colours."""
    row = np.array(colours, np.uint8).T[:, None, :]
    return np.concatenate([row, row[:, :, ::-1]], axis=1)


def test_every_isprs_colour_maps_to_its_class_id_and_black_is_ignored():
    assert ISPRS_CLASSES == ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
    expected = {
        (255, 255, 255): 0,  # impervious surfaces
        (0, 0, 255): 1,  # building
        (0, 255, 255): 2,  # low vegetation
        (0, 255, 0): 3,  # tree
        (255, 255, 0): 4,  # car
        (255, 0, 0): 5,  # clutter
        (0, 0, 0): 255,  # boundary band of the eroded labels: ignored
    }
    ids = ISPRS.apply(_rgb(list(expected)), "top_potsdam_2_10_label.tif")
    assert ids.dtype == np.uint8 and ids.shape == (2, 7)
    assert ids[0].tolist() == list(expected.values())
    assert ids[1].tolist() == list(expected.values())[::-1]
    # An RGBA label (alpha ignored) decodes the same.
    rgba = np.concatenate([_rgb(list(expected)), np.full((1, 2, 7), 255, np.uint8)])
    np.testing.assert_array_equal(ISPRS.apply(rgba), ids)


def test_unknown_colour_is_an_error_naming_file_colour_and_place():
    label = _rgb(ISPRS_PALETTE)
    label[:, 1, 3] = (250, 250, 250)  # almost white
    label[:, 0, 0] = (250, 250, 250)
    with pytest.raises(DataError) as info:
        ISPRS.apply(label, "/data/Label/top_potsdam_2_10_label.tif")
    msg = str(info.value)
    assert msg.startswith("/data/Label/top_potsdam_2_10_label.tif: unknown label colour(s) (250, 250, 250)")
    assert "x 2 px (first at row 0, col 0)" in msg and "(255, 255, 255)" in msg
    # A tolerance accepts near colours (each channel within it).
    near = SegmentationLabels(6, "rgb", ISPRS_PALETTE, ISPRS_IGNORE_COLOURS, colour_tolerance=5)
    assert near.apply(label)[1, 3] == 0
    with pytest.raises(DataError, match="RGB-coded label expected"):
        ISPRS.apply(np.zeros((1, 4, 4), np.uint8), "ids.png")
    with pytest.raises(DataError, match="needs a palette"):
        SegmentationLabels(6, "rgb")
    with pytest.raises(DataError, match="palette has 6 colours but there are 7 classes"):
        SegmentationLabels(7, "rgb", ISPRS_PALETTE)


def test_decode_palette_custom_colours():
    colours = [(10, 20, 30), (200, 100, 0)]
    rgb = np.array([[10, 200], [20, 100], [30, 0]], np.uint8)[:, None, :]
    assert decode_palette(rgb, colours).tolist() == [[0, 1]]
    assert set(PALETTES) >= {"isprs", "loveda"} and len(PALETTES["loveda"].colours) == 7


def test_class_id_labels_with_no_data_and_ignore_values():
    loveda = SegmentationLabels(7, reduce_zero_label=True)
    label = np.array([[0, 1, 2, 7, 255]], np.uint8)
    assert loveda.apply(label).tolist() == [[255, 0, 1, 6, 255]]
    plain = SegmentationLabels(6, ignore_value=6)
    assert plain.apply(np.array([[0, 5, 6, 255]], np.uint16)).tolist() == [[0, 5, 255, 255]]
    assert plain.class_counts(plain.apply(np.array([[0, 0, 5, 6]], np.uint8))).tolist() == [2, 0, 0, 0, 0, 1]
    with pytest.raises(DataError, match=r"l\.png: label values 8, 9 are not class ids 1\.\.7"):
        loveda.apply(np.array([[1, 8, 9]], np.uint8), "l.png")
    with pytest.raises(DataError, match=r"a\.png: label values 6 are not class ids 0\.\.5 of the 6 classes"):
        SegmentationLabels(6).apply(np.array([[0, 6]], np.uint8), "a.png")
    with pytest.raises(DataError, match="3 different bands"):
        SegmentationLabels(6).apply(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), "rgb.png")
