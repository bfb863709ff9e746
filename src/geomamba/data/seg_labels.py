"""Segmentation labels: file values or colours -> class ids ``0..K-1`` and ``IGNORE_INDEX`` (255).

Two encodings (``data.segmentation.encoding``):

- ``"ids"``: single-band class ids (LoveDA, mmsegmentation-style PNGs). ``255`` and ``data.ignore_value``
  are ignored. With ``reduce_zero_label`` (LoveDA: 0 = no-data) ``0`` is ignored and ``1..K`` become
  ``0..K-1``. Any other value is an error naming the file and the values.
- ``"rgb"``: RGB-coded labels (ISPRS Potsdam/Vaihingen). Every palette colour maps to its class id,
  ``ignore_colours`` (ISPRS: black, the boundary band of the eroded-boundary labels) to ``IGNORE_INDEX``,
  and any other colour is an error naming the file, the colour and how many pixels have it.

ISPRS palette (class id: name, colour): 0 impervious surfaces (255, 255, 255), 1 building (0, 0, 255),
2 low vegetation (0, 255, 255), 3 tree (0, 255, 0), 4 car (255, 255, 0), 5 clutter/background
(255, 0, 0); black (0, 0, 0) = ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geomamba.data.errors import DataError
from geomamba.data.labels import IGNORE_INDEX, LabelMapping

__all__ = [
    "ISPRS_CLASSES",
    "ISPRS_IGNORE_COLOURS",
    "ISPRS_PALETTE",
    "LOVEDA_CLASSES",
    "LOVEDA_PALETTE",
    "PALETTES",
    "Palette",
    "SegmentationLabels",
    "decode_palette",
]

Colour = tuple[int, int, int]

ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_PALETTE: tuple[Colour, ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
    (255, 0, 0),
)
ISPRS_IGNORE_COLOURS: tuple[Colour, ...] = ((0, 0, 0),)
# LoveDA label files: 0 = no-data, 1..7 = these classes (reduce_zero_label=True gives ids 0..6).
LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agricultural")
# The LoveDA colours of mmsegmentation's figures (display only: LoveDA labels are class ids).
LOVEDA_PALETTE: tuple[Colour, ...] = (
    (255, 255, 255),
    (255, 0, 0),
    (255, 255, 0),
    (0, 0, 255),
    (159, 129, 183),
    (0, 255, 0),
    (255, 195, 128),
)


@dataclass(frozen=True)
class Palette:
    """Class names, one colour per class, and colours meaning "ignore"."""

    classes: tuple[str, ...]
    colours: tuple[Colour, ...]
    ignore_colours: tuple[Colour, ...] = ()


PALETTES: dict[str, Palette] = {
    "isprs": Palette(ISPRS_CLASSES, ISPRS_PALETTE, ISPRS_IGNORE_COLOURS),
    "loveda": Palette(LOVEDA_CLASSES, LOVEDA_PALETTE),
}


def _code(colours: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8-valued colours -> int32 codes ``r << 16 | g << 8 | b``."""
    c = colours.astype(np.int32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def _plane_code(rgb: np.ndarray) -> np.ndarray:
    """``(3+, H, W)`` label -> ``(H, W)`` int32 codes, built plane by plane (bounded memory on big tiles)."""
    code = rgb[0].astype(np.int32)
    code <<= 8
    code |= rgb[1]
    code <<= 8
    code |= rgb[2]
    return code


def decode_palette(
    rgb: np.ndarray,
    colours: Sequence[Colour],
    *,
    ignore_colours: Sequence[Colour] = (),
    tolerance: int = 0,
    path: Path | str = "label",
) -> np.ndarray:
    """Decode an RGB-coded label ``(3+, H, W)`` to class ids ``(H, W)`` uint8 (``IGNORE_INDEX`` for the
    ignore colours). A pixel matches a colour when every channel differs by at most ``tolerance``.

    Raises ``DataError`` naming ``path`` and the unknown colours (with pixel counts and a position).
    """
    if rgb.ndim != 3 or rgb.shape[0] < 3:
        raise DataError(
            f"{path}: RGB-coded label expected (3 bands), got shape {tuple(rgb.shape)}; for single-band "
            "class-id labels set data.segmentation.encoding=ids"
        )
    if rgb.dtype.kind not in "ui" or rgb[:3].max(initial=0) > 255:
        raise DataError(f"{path}: RGB-coded label must hold 8-bit colours, got dtype {rgb.dtype}")
    out = np.full(rgb.shape[1:], IGNORE_INDEX, np.uint8)
    matched = np.zeros(rgb.shape[1:], bool)
    table = [(i, c) for i, c in enumerate(colours)] + [(IGNORE_INDEX, c) for c in ignore_colours]
    if tolerance <= 0:
        code = _plane_code(rgb)
        for cid, colour in table:
            hit = code == _code(np.asarray(colour))
            out[hit] = cid
            matched |= hit
    else:
        x = rgb[:3].astype(np.int16)
        for cid, colour in table:
            diff = np.abs(x - np.asarray(colour, np.int16)[:, None, None]).max(axis=0)
            hit = (diff <= tolerance) & ~matched
            out[hit] = cid
            matched |= hit
    if not matched.all():
        bad = np.moveaxis(rgb[:3], 0, -1)[~matched]
        codes, first, counts = np.unique(_code(bad), return_index=True, return_counts=True)
        order = np.argsort(-counts)[:5]
        ys, xs = np.nonzero(~matched)
        desc = ", ".join(
            f"({c >> 16}, {(c >> 8) & 255}, {c & 255}) x {n} px (first at row {ys[f]}, col {xs[f]})"
            for c, f, n in zip(codes[order], first[order], counts[order])
        )
        more = f" and {len(codes) - len(order)} more" if len(codes) > len(order) else ""
        raise DataError(
            f"{path}: unknown label colour(s) {desc}{more}; palette colours: "
            f"{', '.join(str(tuple(c)) for c in colours)}"
            + (f", ignored: {', '.join(str(tuple(c)) for c in ignore_colours)}" if ignore_colours else "")
            + " (data.segmentation.palette / ignore_colours / colour_tolerance)"
        )
    return out


@dataclass(frozen=True)
class SegmentationLabels:
    """The label rule of a segmentation dataset (see the module docstring).

    Args:
        num_classes: K (class ids ``0..K-1``; at most 255).
        encoding: ``"ids"`` or ``"rgb"``.
        colours: one colour per class (``"rgb"``: required; ``"ids"``: display colours only).
        ignore_colours: colours decoded to ``IGNORE_INDEX`` (``"rgb"``).
        colour_tolerance: per-channel tolerance of colour matching (``"rgb"``).
        reduce_zero_label: ``"ids"``: 0 = ignored, ``1..K`` -> ``0..K-1``.
        ignore_value: ``"ids"``: a file value meaning "ignore" (besides 255).
    """

    num_classes: int
    encoding: str = "ids"
    colours: tuple[Colour, ...] | None = None
    ignore_colours: tuple[Colour, ...] = ()
    colour_tolerance: int = 0
    reduce_zero_label: bool = False
    ignore_value: int | None = None
    _lut: dict = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lut", {})
        if not 1 <= self.num_classes <= 255:
            raise DataError(f"segmentation needs 1..255 classes, got {self.num_classes}")
        if self.encoding not in ("ids", "rgb"):
            raise DataError(f"data.segmentation.encoding must be 'ids' or 'rgb', got {self.encoding!r}")
        if self.encoding == "rgb" and self.colours is None:
            raise DataError("data.segmentation.encoding=rgb needs a palette (data.segmentation.palette)")
        if self.colours is not None and len(self.colours) != self.num_classes:
            raise DataError(
                f"the palette has {len(self.colours)} colours but there are {self.num_classes} classes"
            )

    def _id_table(self, top: int) -> np.ndarray:
        """Look-up table file value -> class id (``IGNORE_INDEX`` for ignored, 254 + 1 = 256 for invalid)."""
        if top not in self._lut:
            values = np.arange(top + 1)
            ids = values - 1 if self.reduce_zero_label else values.copy()
            lut = np.where((ids >= 0) & (ids < self.num_classes), ids, 256)
            lut[values == IGNORE_INDEX] = IGNORE_INDEX
            if self.ignore_value is not None and self.ignore_value <= top:
                lut[self.ignore_value] = IGNORE_INDEX
            if self.reduce_zero_label:
                lut[0] = IGNORE_INDEX
            self._lut[top] = lut.astype(np.int32)
        return self._lut[top]

    def _ids(self, label: np.ndarray, path: Path | str) -> np.ndarray:
        label = LabelMapping().squeeze(label, path)
        if label.dtype.kind == "f":
            if not np.isfinite(label).all() or (label != np.round(label)).any():
                raise DataError(f"{path}: class-id label holds non-integer values")
            label = label.astype(np.int64)
        if label.dtype.kind not in "ui":
            raise DataError(f"{path}: class-id label must be an integer image, got dtype {label.dtype}")
        if label.size and label.min() < 0:
            raise DataError(f"{path}: negative label values ({int(label.min())})")
        top = max(int(label.max(initial=0)), 255)
        if top > 65535:
            raise DataError(f"{path}: label value {top} is not a class id")
        out = self._id_table(top)[label]
        if (out == 256).any():
            bad = np.unique(label[out == 256])
            shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
            k = self.num_classes
            expected = f"1..{k} (0 = no-data, reduce_zero_label)" if self.reduce_zero_label else f"0..{k - 1}"
            extra = "" if self.ignore_value is None else f", ignore value {self.ignore_value}"
            raise DataError(
                f"{path}: label values {shown} are not class ids {expected} of the {k} classes "
                f"(255{extra} = ignored); check data.class_names and data.segmentation.encoding"
            )
        return out.astype(np.uint8)

    def apply(self, label: np.ndarray, path: Path | str = "label") -> np.ndarray:
        """Label ``(C, H, W)`` or ``(H, W)`` as read from a file -> class ids ``(H, W)`` uint8
        (``IGNORE_INDEX`` = ignored); ``DataError`` naming ``path`` when a value or colour is not allowed."""
        if self.encoding == "rgb":
            if label.ndim != 3:
                label = label[None]
            assert self.colours is not None
            return decode_palette(
                label,
                self.colours,
                ignore_colours=self.ignore_colours,
                tolerance=self.colour_tolerance,
                path=path,
            )
        return self._ids(label, path)

    def class_counts(self, ids: np.ndarray) -> np.ndarray:
        """Pixels per class ``(K,)`` int64 of a decoded label (ignored pixels not counted)."""
        counts = np.bincount(ids.ravel(), minlength=256)
        return counts[: self.num_classes].astype(np.int64)
