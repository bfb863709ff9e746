"""Change labels: file values -> class ids 0 (unchanged), 1 (changed), ``IGNORE_INDEX`` (not scored).

Rule (the same for every dataset, no guessing per file):

- ``0`` -> unchanged; ``1`` and ``255`` -> changed (0/1 and 0/255 labels both work);
- ``ignore_value`` (default ``None``: nothing ignored) -> ``IGNORE_INDEX`` (255 in the mask tensor).
  For 0/1 labels whose void pixels are 255, set ``ignore_value=255``; then 255 means "ignore", not "changed";
- any other value is an error naming the file and the values; so is a label that mixes 1 and 255 while
  ``ignore_value`` is not 255 (a 0/1 label with a 255 void marker would otherwise count voids as changes).

Multi-band labels (e.g. RGB PNGs of a grey mask) are accepted when all bands are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geomamba.data.errors import DataError

__all__ = ["IGNORE_INDEX", "LabelMapping"]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelMapping:
    """Maps label file values to class ids; ``ignore_value`` is the file value meaning "do not score"."""

    ignore_value: int | None = None

    def __post_init__(self) -> None:
        if self.ignore_value is not None and self.ignore_value in (0, 1):
            raise DataError(
                f"data.ignore_value {self.ignore_value} is a class value (0 or 1); choose e.g. 255"
            )

    @property
    def allowed(self) -> set[int]:
        """The file values that are accepted."""
        return {0, 1, 255} | ({self.ignore_value} if self.ignore_value is not None else set())

    def problem(self, values: np.ndarray) -> str | None:
        """A description of what is wrong with a label whose unique values are ``values`` (None if fine)."""
        vals = {int(v) for v in np.unique(values)}
        bad = sorted(vals - self.allowed)
        if bad:
            shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
            hint = "" if self.ignore_value is not None else " (set data.ignore_value for a void value)"
            return (
                f"label values {shown} not allowed; expected 0/1 or 0/255"
                f"{'' if self.ignore_value is None else f' plus ignore value {self.ignore_value}'}{hint}"
            )
        if {1, 255} <= vals and self.ignore_value != 255:
            return "label mixes values 1 and 255; if 255 marks pixels to ignore, set data.ignore_value=255"
        return None

    def squeeze(self, label: np.ndarray, path: Path | str = "label") -> np.ndarray:
        """``(C, H, W)`` or ``(H, W)`` label -> ``(H, W)``; multi-band only when all bands are equal."""
        if label.ndim == 3:
            if label.shape[0] > 1 and not all(np.array_equal(label[0], band) for band in label[1:]):
                raise DataError(f"{path}: label has {label.shape[0]} different bands; expected one band")
            label = label[0]
        return label

    def apply(self, label: np.ndarray, path: Path | str = "label") -> np.ndarray:
        """Class-id mask ``(H, W)`` int64 with values in {0, 1, IGNORE_INDEX}; DataError when invalid."""
        label = self.squeeze(label, path)
        problem = self.problem(label)
        if problem is not None:
            raise DataError(f"{path}: {problem}")
        out = np.zeros(label.shape, np.int64)
        out[(label == 1) | (label == 255)] = 1
        if self.ignore_value is not None:
            out[label == self.ignore_value] = IGNORE_INDEX
        return out
