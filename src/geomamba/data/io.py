"""Reading and writing rasters: rasterio for GeoTIFF (and every format GDAL reads), Pillow for PNG/JPG/BMP.

Arrays are channels-first ``(C, H, W)`` in the file's own dtype (uint8, uint16, float32, ...). Windows are
``(row_off, col_off, height, width)`` tuples in pixels. Every failure raises ``DataError`` naming the file.
Writers are atomic: they write ``.<name>.tmp-<host>-<pid><suffix>`` next to the target and rename it on
success, so an interrupted write never leaves a partial file at the target path (``temp_path``); temporary
files that killed processes of this host left behind are removed by the next write (``remove_stale_temps``).
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as _RioWindow

from geomamba.data.errors import DataError

__all__ = [
    "PIL_SUFFIXES",
    "RASTER_SUFFIXES",
    "RasterInfo",
    "RasterWriter",
    "Window",
    "raster_info",
    "read_raster",
    "remove_stale_temps",
    "temp_path",
    "write_raster",
]

Window = tuple[int, int, int, int]  # (row_off, col_off, height, width)

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
RASTER_SUFFIXES = (*PIL_SUFFIXES, ".tif", ".tiff", ".jp2", ".img", ".vrt")
_GTIFF_SUFFIXES = (".tif", ".tiff")

# Pillow mode -> (numpy dtype, band count) for header-only inspection.
_PIL_MODES: dict[str, tuple[str, int]] = {
    "1": ("uint8", 1),
    "L": ("uint8", 1),
    "P": ("uint8", 1),
    "LA": ("uint8", 2),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
    "CMYK": ("uint8", 3),  # converted to RGB on read
    "YCbCr": ("uint8", 3),  # converted to RGB on read
    "I;16": ("uint16", 1),
    "I;16B": ("uint16", 1),
    "I;16L": ("uint16", 1),
    "I": ("int32", 1),
    "F": ("float32", 1),
}


@dataclass(frozen=True)
class RasterInfo:
    """Header of a raster: size, bands, dtype and georeference (``crs``/``transform`` None when absent)."""

    path: Path
    height: int
    width: int
    count: int
    dtype: str
    crs: Any = None  # rasterio.crs.CRS
    transform: Any = None  # affine.Affine

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width


def _rio_reason(exc: Exception) -> str:
    """rasterio's message, or GDAL's underlying one when rasterio only says "see previous exception"."""
    msg = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and "previous exception" in msg:
        msg = str(cause)
    return " ".join(msg.split())


def temp_path(path: str | Path, keep_suffix: bool = True) -> Path:
    """Hidden temporary file next to ``path`` for an atomic write by this process:
    ``.<stem>.tmp-<host>-<pid><suffix>`` (``keep_suffix``) or ``.<name>.tmp-<host>-<pid>``."""
    path = Path(path)
    tag = f"tmp-{socket.gethostname()}-{os.getpid()}"
    if keep_suffix:
        return path.with_name(f".{path.stem}.{tag}{path.suffix}")
    return path.with_name(f".{path.name}.{tag}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the ``temp_path`` files of ``path`` (either form) left by dead processes of this host."""
    path = Path(path)
    host = re.escape(socket.gethostname())
    forms = (
        rf"^\.{re.escape(path.stem)}\.tmp-{host}-(\d+){re.escape(path.suffix)}$",
        rf"^\.{re.escape(path.name)}\.tmp-{host}-(\d+)$",
    )
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.iterdir():
        for form in forms:
            m = re.match(form, p.name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed.append(p)
                break
    return removed


def _uses_pil(path: Path) -> bool:
    return path.suffix.lower() in PIL_SUFFIXES


def _check_exists(path: Path) -> None:
    if not path.exists():
        if path.is_symlink():
            try:
                path.resolve(strict=True)
            except RuntimeError:  # Python < 3.13
                raise DataError(f"{path}: symbolic link loop") from None
            except OSError as exc:
                if "loop" in str(exc).lower() or getattr(exc, "errno", None) == 40:
                    raise DataError(f"{path}: symbolic link loop") from None
            raise DataError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does not exist)")
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")


def raster_info(path: str | Path) -> RasterInfo:
    """Read only the header of ``path``."""
    path = Path(path)
    _check_exists(path)
    if _uses_pil(path):
        try:
            with Image.open(path) as img:
                if img.mode not in _PIL_MODES:
                    raise DataError(f"{path}: unsupported image mode {img.mode!r}")
                dtype, count = _PIL_MODES[img.mode]
                return RasterInfo(path, img.height, img.width, count, dtype)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: unreadable image ({exc})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                georef = src.crs is not None
                return RasterInfo(
                    path,
                    src.height,
                    src.width,
                    src.count,
                    str(src.dtypes[0]),
                    src.crs,
                    src.transform if georef else None,
                )
    except RasterioError as exc:
        raise DataError(f"{path}: unreadable raster ({_rio_reason(exc)})") from None


def _pil_array(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("CMYK", "YCbCr"):
                img = img.convert("RGB")
            if img.mode not in _PIL_MODES:
                raise DataError(f"{path}: unsupported image mode {img.mode!r}")
            arr = np.asarray(img)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: unreadable or truncated image ({exc})") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def read_raster(
    path: str | Path, window: Window | None = None, *, bands: list[int] | None = None
) -> np.ndarray:
    """Read ``path`` (or one ``window`` of it) as a ``(C, H, W)`` array in the file's dtype.

    Args:
        path: image file.
        window: ``(row_off, col_off, height, width)``; must lie inside the image.
        bands: 1-based band numbers to keep (default all).
    """
    path = Path(path)
    _check_exists(path)
    if _uses_pil(path):
        arr = _pil_array(path)
        if window is not None:
            r, c, h, w = window
            if r < 0 or c < 0 or r + h > arr.shape[1] or c + w > arr.shape[2]:
                raise DataError(f"{path}: window {window} outside the image of size {arr.shape[1:]}")
            arr = arr[:, r : r + h, c : c + w]
        if bands is not None:
            _check_bands(path, bands, arr.shape[0])
            arr = arr[[b - 1 for b in bands]]
        return np.ascontiguousarray(arr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if bands is not None:
                    _check_bands(path, bands, src.count)
                rio_window = None
                if window is not None:
                    r, c, h, w = window
                    if r < 0 or c < 0 or r + h > src.height or c + w > src.width:
                        raise DataError(
                            f"{path}: window {window} outside the image of size {(src.height, src.width)}"
                        )
                    rio_window = _RioWindow(c, r, w, h)
                return src.read(bands, window=rio_window)
    except RasterioError as exc:
        raise DataError(f"{path}: unreadable or truncated raster ({_rio_reason(exc)})") from None


def _check_bands(path: Path, bands: list[int], count: int) -> None:
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise DataError(f"{path}: band(s) {bad} requested but the image has {count} band(s) (1-based)")


WRITER_CACHE_BYTES = 64 * 2**20  # GDAL block cache while a ``RasterWriter`` is open


class RasterWriter:
    """Atomic raster writer, window by window for GeoTIFF (bounded memory), whole-image for PNG/JPG/BMP.

    Use as a context manager: the target appears only when the block exits without error. While a GeoTIFF
    writer is open, GDAL's block cache is capped at ``WRITER_CACHE_BYTES`` (reads in between included).

    Args:
        path: output file; ``.tif``/``.tiff`` -> tiled, deflate-compressed GeoTIFF; PNG/JPG/BMP via Pillow.
        height, width, count: output size and band count.
        dtype: numpy dtype name (PNG supports uint8 and uint16).
        crs, transform: georeference (GeoTIFF only; e.g. those of image A).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        height: int,
        width: int,
        count: int,
        dtype: str,
        crs: Any = None,
        transform: Any = None,
    ) -> None:
        self.path = Path(path)
        self.height, self.width, self.count, self.dtype = height, width, count, np.dtype(dtype)
        self.tmp = temp_path(self.path)
        self._dst = None
        self._env: rasterio.Env | None = None
        self._buf: np.ndarray | None = None
        suffix = self.path.suffix.lower()
        if suffix in _GTIFF_SUFFIXES:
            self._crs, self._transform = crs, transform
        elif suffix in PIL_SUFFIXES:
            if self.dtype not in (np.uint8, np.uint16) or count not in (1, 3, 4):
                raise DataError(
                    f"{self.path}: {suffix} output needs uint8/uint16 with 1, 3 or 4 bands "
                    f"(got {self.dtype}, {count} bands); write a .tif instead"
                )
        else:
            raise DataError(f"{self.path}: unsupported output format {suffix!r}; use .tif or .png")

    def __enter__(self) -> RasterWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        if self.path.suffix.lower() in _GTIFF_SUFFIXES:
            profile = {
                "driver": "GTiff",
                "height": self.height,
                "width": self.width,
                "count": self.count,
                "dtype": self.dtype.name,
                "compress": "deflate",
                "BIGTIFF": "IF_SAFER",
            }
            if self.height >= 256 and self.width >= 256:
                profile.update(tiled=True, blockxsize=256, blockysize=256)
            if self._crs is not None:
                profile["crs"] = self._crs
            if self._transform is not None:
                profile["transform"] = self._transform
            # GDAL keeps written blocks in its block cache (default 5% of the RAM) until the file is
            # closed: capped while the writer is open, so memory stays bounded on any machine.
            self._env = rasterio.Env(GDAL_CACHEMAX=WRITER_CACHE_BYTES)
            self._env.__enter__()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    self._dst = rasterio.open(self.tmp, "w", **profile)
            except BaseException:
                self._env.__exit__(None, None, None)
                self._env = None
                raise
        else:
            self._buf = np.zeros((self.count, self.height, self.width), self.dtype)
        return self

    def write(self, array: np.ndarray, row_off: int = 0, col_off: int = 0) -> None:
        """Write a ``(count, h, w)`` block with its top-left corner at ``(row_off, col_off)``."""
        if array.ndim != 3 or array.shape[0] != self.count:
            raise ValueError(f"expected a ({self.count}, h, w) block, got {array.shape}")
        _, h, w = array.shape
        if row_off + h > self.height or col_off + w > self.width:
            raise ValueError(f"block {array.shape} at ({row_off}, {col_off}) outside {self.path}")
        if self._dst is not None:
            self._dst.write(array.astype(self.dtype, copy=False), window=_RioWindow(col_off, row_off, w, h))
        else:
            assert self._buf is not None
            self._buf[:, row_off : row_off + h, col_off : col_off + w] = array

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._dst is not None:
                self._dst.close()
            elif exc_type is None and self._buf is not None:
                arr = self._buf[0] if self.count == 1 else self._buf.transpose(1, 2, 0)
                fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[
                    self.path.suffix.lower()
                ]
                Image.fromarray(np.ascontiguousarray(arr)).save(self.tmp, format=fmt)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        finally:
            if self._env is not None:
                self._env.__exit__(None, None, None)
                self._env = None
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_raster(path: str | Path, array: np.ndarray, *, crs: Any = None, transform: Any = None) -> Path:
    """Write a whole ``(C, H, W)`` (or ``(H, W)``) array atomically; returns the path."""
    if array.ndim == 2:
        array = array[None]
    c, h, w = array.shape
    with RasterWriter(
        path, height=h, width=w, count=c, dtype=array.dtype.name, crs=crs, transform=transform
    ) as dst:
        dst.write(array)
    return Path(path)
