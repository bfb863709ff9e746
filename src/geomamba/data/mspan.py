"""MS + PAN scenes for pixel-wise classification (ADCD-Net, SPEC §3, issue 8).

A scene is a multispectral image ``ms (C, H, W)`` (e.g. 4 bands), a panchromatic image ``pan (1, rH, rW)``
at ``r`` times its resolution (``ratio``, 4 by default) and an optional sparse label map ``(H, W)`` on the
MS grid (0 = unlabelled, 1..K = classes). Files are GeoTIFF (or any raster rasterio reads) or NumPy
``.npy`` arrays saved channels-first ``(C, H, W)`` or ``(H, W)``.

Samples are *patch pairs centred on a pixel*: for MS pixel ``(i, j)`` the MS patch is rows
``i - s//2 .. i - s//2 + s`` (and the same for columns) and the PAN patch is exactly the ground area of that
MS patch, ``r*s`` PAN pixels square. The scene is mirror-padded (numpy ``symmetric``, which keeps the MS
and PAN paddings aligned), so border pixels have full patches.
Labelled pixels are split into train and test *by pixel*, per class, with a fixed seed.

``make_synthetic_mspan`` makes a scene (class regions with their own spectra and PAN textures) for tests
and the demo; ``write_mspan`` saves a scene as GeoTIFF (with a georeference) or ``.npy`` files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "MSPanPatchDataset",
    "MSPanScene",
    "all_pixels",
    "load_mspan",
    "make_synthetic_mspan",
    "normalise_bands",
    "read_band_array",
    "split_pixels",
    "write_mspan",
]

_NORMALISATIONS = ("zscore", "minmax", "none")


@dataclass
class MSPanScene:
    """One MS + PAN scene.

    Attributes:
        ms: ``(C, H, W)`` float32.
        pan: ``(1, ratio*H, ratio*W)`` float32.
        labels: ``(H, W)`` int64 (0 = unlabelled, 1..K classes) or ``None``.
        ratio: PAN / MS resolution ratio r.
        crs, transform: the PAN georeference (``None`` for NumPy input); a class map on the MS grid has
            the transform ``transform @ Affine.scale(ratio)`` (``ms_transform``).
        sources: file names, for messages.
    """

    ms: np.ndarray
    pan: np.ndarray
    labels: np.ndarray | None = None
    ratio: int = 4
    crs: Any = None
    transform: Any = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the MS grid."""
        return int(self.ms.shape[1]), int(self.ms.shape[2])

    @property
    def num_classes(self) -> int:
        """K, the largest label (0 without labels)."""
        return int(self.labels.max()) if self.labels is not None and self.labels.size else 0

    @property
    def ms_transform(self) -> Any:
        """The georeference of the MS grid (``None`` when the PAN has none)."""
        if self.transform is None:
            return None
        from rasterio.transform import Affine

        return self.transform @ Affine.scale(self.ratio)

    def labelled_pixels(self) -> np.ndarray:
        """``(N, 2)`` int64 row/column of every labelled pixel (row-major order)."""
        if self.labels is None:
            raise ValueError(f"scene {self.sources.get('ms', '')!r} has no label map")
        return np.argwhere(self.labels > 0).astype(np.int64)


# ----------------------------------------------------------------------------------------- reading


def read_band_array(path: str | Path, *, what: str = "image") -> tuple[np.ndarray, Any, Any]:
    """Read ``(C, H, W)`` from a raster (rasterio) or ``.npy`` file, with its CRS and transform.

    A 2-D array becomes one band. Raises ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{what} file {path} is not a readable .npy array ({exc})") from exc
        crs = transform = None
    else:
        import rasterio
        from rasterio.errors import RasterioError

        try:
            with rasterio.open(path) as src:
                array = src.read()
                crs = src.crs
                transform = src.transform if not src.transform.is_identity else None
        except RasterioError as exc:
            raise ValueError(f"{what} file {path} cannot be read as a raster ({exc})") from exc
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"{what} file {path}: expected (C, H, W) or (H, W), got shape {array.shape}")
    return array, crs, transform


def normalise_bands(array: np.ndarray, mode: str = "zscore", *, what: str = "image") -> np.ndarray:
    """Per-band normalisation of ``(C, H, W)`` to float32: ``zscore`` (mean 0, std 1), ``minmax``
    ([0, 1]) or ``none``. A constant band becomes 0."""
    if mode not in _NORMALISATIONS:
        raise ValueError(f"normalise must be one of {_NORMALISATIONS}, got {mode!r}")
    a = array.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    if mode == "none":
        return a
    if mode == "zscore":
        mean = a.mean(axis=(1, 2), keepdims=True)
        std = a.std(axis=(1, 2), keepdims=True)
        return np.where(std > 0, (a - mean) / np.where(std > 0, std, 1), 0).astype(np.float32)
    lo, hi = a.min(axis=(1, 2), keepdims=True), a.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


def load_mspan(
    ms: str | Path,
    pan: str | Path,
    labels: str | Path | None = None,
    *,
    ratio: int | None = 4,
    normalise: str = "zscore",
) -> MSPanScene:
    """Read and check an MS + PAN (+ labels) scene.

    Args:
        ms, pan, labels: file paths (GeoTIFF/raster or ``.npy``); ``labels`` on the MS grid.
        ratio: PAN / MS resolution ratio; ``None`` infers it from the sizes.
        normalise: per-band normalisation of each image (``zscore``, ``minmax``, ``none``).

    Raises:
        ValueError: naming the file and the problem: a PAN with more than one band, sizes that do not
        differ by exactly ``ratio``, labels off the MS grid, negative or non-integer labels, NaNs.
    """
    ms_a, _, ms_tf = read_band_array(ms, what="MS")
    pan_a, crs, pan_tf = read_band_array(pan, what="PAN")
    if pan_a.shape[0] != 1:
        raise ValueError(f"PAN file {pan} has {pan_a.shape[0]} bands; a panchromatic image has 1")
    (h, w), (ph, pw) = ms_a.shape[1:], pan_a.shape[1:]
    if ratio is None:
        if ph % h or pw % w or ph // h != pw // w:
            raise ValueError(
                f"cannot infer the PAN/MS ratio: PAN {pan} is {ph}x{pw}, MS {ms} is {h}x{w} "
                "(the PAN must be an integer multiple of the MS in both directions)"
            )
        ratio = ph // h
    if ratio < 1 or (ph, pw) != (ratio * h, ratio * w):
        raise ValueError(
            f"PAN {pan} is {ph}x{pw} but MS {ms} is {h}x{w}: with ratio {ratio} the PAN must be "
            f"{ratio * h}x{ratio * w}"
        )
    if ms_tf is not None and pan_tf is not None:
        expected = pan_tf.a * ratio, pan_tf.e * ratio
        if not np.allclose((ms_tf.a, ms_tf.e), expected, rtol=1e-3) or not np.allclose(
            (ms_tf.c, ms_tf.f), (pan_tf.c, pan_tf.f), atol=abs(pan_tf.a) * ratio
        ):
            warnings.warn(
                f"the georeferences of MS {ms} and PAN {pan} do not agree with ratio {ratio} "
                f"(MS {tuple(ms_tf)[:6]}, PAN {tuple(pan_tf)[:6]}); the pixel grids are used as given",
                stacklevel=2,
            )
    label_a = None
    if labels is not None:
        raw, _, _ = read_band_array(labels, what="label")
        if raw.shape[0] != 1:
            raise ValueError(f"label file {labels} has {raw.shape[0]} bands; a label map has 1")
        raw = raw[0]
        if raw.shape != (h, w):
            raise ValueError(
                f"label file {labels} is {raw.shape[0]}x{raw.shape[1]} but the MS grid is {h}x{w} "
                "(labels must be on the MS grid)"
            )
        if raw.dtype.kind == "f":
            if not np.isfinite(raw).all() or not np.equal(np.round(raw), raw).all():
                raise ValueError(f"label file {labels} holds non-integer values")
        elif raw.dtype.kind not in "iu":
            raise ValueError(f"label file {labels} has dtype {raw.dtype}; expected integer class ids")
        if raw.min() < 0:
            raise ValueError(f"label file {labels} holds negative values (0 = unlabelled, 1..K = classes)")
        label_a = raw.astype(np.int64)
    return MSPanScene(
        ms=normalise_bands(ms_a, normalise, what=f"MS {ms}"),
        pan=normalise_bands(pan_a, normalise, what=f"PAN {pan}"),
        labels=label_a,
        ratio=int(ratio),
        crs=crs,
        transform=pan_tf,
        sources={"ms": str(ms), "pan": str(pan), **({"labels": str(labels)} if labels else {})},
    )


# ----------------------------------------------------------------------------------------- splits


def split_pixels(
    labels: np.ndarray,
    *,
    train_fraction: float = 0.1,
    per_class: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split the labelled pixels into train and test, per class, reproducibly.

    Args:
        labels: ``(H, W)`` label map (0 = unlabelled).
        train_fraction: share of each class's pixels for training (rounded; at least 1, and at least
            one pixel is left for testing when the class has two or more).
        per_class: a fixed number of training pixels per class instead of a fraction.
        seed: seed of the shuffle (``numpy.random.default_rng``), the same split on every machine.

    Returns:
        ``(train, test)``, each ``(N, 2)`` int64 rows/columns, grouped by class (ascending).
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels[labels > 0]):
        pix = np.argwhere(labels == cls).astype(np.int64)
        pix = pix[rng.permutation(len(pix))]
        n = len(pix)
        k = per_class if per_class is not None else round(train_fraction * n)
        k = max(1, k) if n == 1 else min(max(1, k), n - 1)
        train.append(pix[:k])
        test.append(pix[k:])
    empty = np.zeros((0, 2), np.int64)
    return (np.concatenate(train) if train else empty), (np.concatenate(test) if test else empty)


def all_pixels(shape: tuple[int, int]) -> np.ndarray:
    """``(H*W, 2)`` int64 row/column of every pixel of an ``(H, W)`` grid, row-major (for prediction)."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------- dataset


class MSPanPatchDataset(Dataset):
    """Patch pairs centred on given MS pixels.

    Args:
        scene: the scene (normalised arrays).
        pixels: ``(N, 2)`` rows/columns on the MS grid (``split_pixels``, ``all_pixels``).
        patch_size: MS patch side s (the PAN patch is ``ratio * s``).
        with_labels: include ``"label"`` (class id = label - 1); every pixel must then be labelled.

    Items: ``{"ms": (C, s, s) float32, "pan": (1, r*s, r*s) float32, "label": () int64, "pixel": (2,)
    int64}``; the centre pixel sits at index ``s // 2`` of the MS patch.
    """

    def __init__(
        self,
        scene: MSPanScene,
        pixels: np.ndarray,
        *,
        patch_size: int = 16,
        with_labels: bool = True,
    ) -> None:
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        pixels = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
        h, w = scene.shape
        bad = (pixels[:, 0] < 0) | (pixels[:, 0] >= h) | (pixels[:, 1] < 0) | (pixels[:, 1] >= w)
        if bad.any():
            raise ValueError(f"pixels {pixels[bad][:5].tolist()} lie outside the {h}x{w} MS grid")
        if with_labels:
            if scene.labels is None:
                raise ValueError(
                    f"scene {scene.sources.get('ms', '')!r} has no labels (use with_labels=False)"
                )
            unlabelled = scene.labels[pixels[:, 0], pixels[:, 1]] == 0
            if unlabelled.any():
                raise ValueError(f"pixels {pixels[unlabelled][:5].tolist()} are unlabelled (label 0)")
        self.scene, self.pixels, self.patch_size, self.with_labels = scene, pixels, patch_size, with_labels
        r, s = scene.ratio, patch_size
        self._before, after = s // 2, s - s // 2
        self._ms = np.pad(scene.ms, ((0, 0), (self._before, after), (self._before, after)), mode="symmetric")
        self._pan = np.pad(
            scene.pan,
            ((0, 0), (r * self._before, r * after), (r * self._before, r * after)),
            mode="symmetric",
        )

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i, j = (int(v) for v in self.pixels[index])
        s, r = self.patch_size, self.scene.ratio
        # in padded coordinates, MS pixel (i, j) is at (i + before, j + before): the patch starts at (i, j)
        item = {
            "ms": torch.from_numpy(np.ascontiguousarray(self._ms[:, i : i + s, j : j + s])),
            "pan": torch.from_numpy(
                np.ascontiguousarray(self._pan[:, r * i : r * (i + s), r * j : r * (j + s)])
            ),
            "pixel": torch.tensor([i, j], dtype=torch.int64),
        }
        if self.with_labels:
            item["label"] = torch.tensor(int(self.scene.labels[i, j]) - 1, dtype=torch.int64)
        return item


# -------------------------------------------------------------------------------------- synthetic


def _upsample(a: np.ndarray, r: int) -> np.ndarray:
    return np.repeat(np.repeat(a, r, axis=-2), r, axis=-1)


def make_synthetic_mspan(
    size: int = 64,
    *,
    ratio: int = 4,
    bands: int = 4,
    num_classes: int = 4,
    labelled_fraction: float = 0.3,
    noise: float = 0.02,
    seed: int = 0,
) -> MSPanScene:
    """A synthetic MS + PAN scene with sparse labels (values in [0, 1], not normalised).

    Land-cover regions (Voronoi cells of random seeds, every class present) each have a spectrum (one
    value per MS band, plus a smooth brightness variation) and a PAN texture (stripes of a class-specific
    frequency and orientation). The PAN is the band mean plus the texture at full resolution; the MS is
    the high-resolution spectral image averaged over ``ratio x ratio`` blocks, so class edges blur as in
    real MS imagery. Labels (on the MS grid, 1..K) keep a random ``labelled_fraction`` of the pixels
    whose block is of one class; the rest are 0.

    Returns:
        ``MSPanScene`` with ``ms (bands, size, size)``, ``pan (1, ratio*size, ratio*size)``, labels.
    """
    if size < 2 or ratio < 1 or bands < 1 or num_classes < 1:
        raise ValueError(f"bad synthetic scene options: size={size}, ratio={ratio}, bands={bands}")
    rng = np.random.default_rng(seed)
    hr = size * ratio
    n_regions = max(3 * num_classes, 6)
    centres = rng.uniform(0, hr, size=(n_regions, 2))
    region_class = np.concatenate(
        [np.arange(num_classes), rng.integers(0, num_classes, n_regions - num_classes)]
    )
    yy, xx = np.mgrid[0:hr, 0:hr].astype(np.float32)
    d = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    cls_hr = region_class[d.argmin(axis=0)]  # (hr, hr) 0..K-1
    spectra = rng.uniform(0.15, 0.85, size=(num_classes, bands)).astype(np.float32)
    shade = 1.0 + 0.1 * np.sin(yy / hr * 2 * np.pi * rng.uniform(0.5, 1.5)) * np.cos(xx / hr * 2 * np.pi)
    spectral = spectra[cls_hr].transpose(2, 0, 1) * shade[None]  # (bands, hr, hr)
    freq = rng.uniform(0.15, 0.9, size=num_classes)
    angle = rng.uniform(0, np.pi, size=num_classes)
    phase = np.cos(angle)[cls_hr] * xx + np.sin(angle)[cls_hr] * yy
    texture = 0.15 * np.sin(freq[cls_hr] * phase)
    pan = spectral.mean(axis=0, keepdims=True) + texture[None] + rng.normal(0, noise, (1, hr, hr))
    ms = spectral.reshape(bands, size, ratio, size, ratio).mean(axis=(2, 4))
    ms = ms + rng.normal(0, noise, ms.shape)
    blocks = cls_hr.reshape(size, ratio, size, ratio).transpose(0, 2, 1, 3).reshape(size, size, -1)
    pure = (blocks == blocks[..., :1]).all(axis=-1)
    labels = np.where(pure & (rng.random((size, size)) < labelled_fraction), blocks[..., 0] + 1, 0)
    return MSPanScene(
        ms=ms.astype(np.float32),
        pan=pan.astype(np.float32),
        labels=labels.astype(np.int64),
        ratio=ratio,
        sources={"ms": "synthetic", "pan": "synthetic"},
    )


def write_mspan(
    folder: str | Path,
    scene: MSPanScene,
    *,
    fmt: str = "tif",
    pixel_size: float = 0.5,
    origin: tuple[float, float] = (500000.0, 4000000.0),
    crs: str = "EPSG:32650",
) -> dict[str, Path]:
    """Write ``ms``, ``pan`` and ``labels`` as ``ms.tif`` / ``pan.tif`` / ``labels.tif`` (float32 images,
    uint16 labels, georeferenced: the scene's own CRS/transform, else ``crs`` with ``pixel_size`` metres
    PAN pixels at ``origin``) or as ``.npy`` (``fmt="npy"``). Returns ``{"ms", "pan", "labels"}`` paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"ms": scene.ms.astype(np.float32), "pan": scene.pan.astype(np.float32)}
    if scene.labels is not None:
        arrays["labels"] = scene.labels.astype(np.uint16)[None]
    paths = {}
    if fmt == "npy":
        for name, a in arrays.items():
            paths[name] = folder / f"{name}.npy"
            np.save(paths[name], a[0] if name == "labels" else a)
        return paths
    if fmt != "tif":
        raise ValueError(f"fmt must be 'tif' or 'npy', got {fmt!r}")
    import rasterio
    from rasterio.transform import Affine

    pan_tf = scene.transform or Affine(pixel_size, 0.0, origin[0], 0.0, -pixel_size, origin[1])
    ref = replace(scene, transform=pan_tf)
    for name, a in arrays.items():
        paths[name] = folder / f"{name}.tif"
        tf = pan_tf if name == "pan" else ref.ms_transform
        profile = {
            "driver": "GTiff",
            "height": a.shape[1],
            "width": a.shape[2],
            "count": a.shape[0],
            "dtype": a.dtype.name,
            "crs": scene.crs or crs,
            "transform": tf,
        }
        with rasterio.open(paths[name], "w", **profile) as dst:
            dst.write(a)
    return paths
