"""Finding and checking the files of a semantic-segmentation dataset.

Folders are templates with ``{split}`` (defaults: LoveDA layout ``root/{split}/images`` and
``root/{split}/labels``)::

    LoveDA:     images: "{split}/images"   labels: "{split}/labels"
    ISPRS:      images: "RGB/{split}"      labels: "Label/{split}"    (or "IRRG/{split}" for IRRG tiles)

An image and its label share a name after optional suffixes are removed from the file stems
(``image_suffix: _RGB``, ``label_suffix: _label`` pair ``top_potsdam_2_10_RGB.tif`` with
``top_potsdam_2_10_label.tif``). Validation/test splits can be scored against other labels
(``eval_label_dir``: e.g. ISPRS eroded-boundary labels, ``_label_noBoundary``). When a template's folder
does not exist but the template without its ``{split}`` part is a folder of images (``root/images``),
that folder is used for every split. Optional list files (one name per line) restrict a split: given, or found at
``root/list/<split>.txt`` or ``root/<split>.txt``.

``validate_segmentation_dataset`` reads every file once before training (like
``geomamba.data.validate`` for change detection) and raises one ``DataError`` listing every problem:
missing partner files, image/label size mismatch, band or dtype differences within a split, unreadable
files, NaN pixels, label values or colours that are not classes; it also counts pixels per class and
computes the per-band normalisation statistics of one split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geomamba.data.errors import DataError
from geomamba.data.io import RASTER_SUFFIXES, raster_info, read_raster
from geomamba.data.layout import _index_folder, _read_list, find_list_file
from geomamba.data.seg_labels import SegmentationLabels
from geomamba.data.validate import (
    BandStats,
    DatasetReport,
    UniformSplit,
    _format_problems,
    check_in_threads,
    splits_differ,
)

__all__ = [
    "SegmentationLayout",
    "SegmentationSample",
    "SegmentationSplitReport",
    "discover_segmentation_split",
    "validate_segmentation_dataset",
]

_STATS_ROWS = 512  # rows per block when accumulating statistics (bounded memory on 6000x6000 tiles)


@dataclass(frozen=True)
class SegmentationSample:
    """One image and (optionally) its label file."""

    name: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class SegmentationLayout:
    """Where images and labels are (see the module docstring)."""

    image_dir: str = "{split}/images"
    label_dir: str = "{split}/labels"
    eval_label_dir: str | None = None
    image_suffix: str = ""
    label_suffix: str = ""
    eval_label_suffix: str | None = None

    def folder(self, root: str | Path, template: str, split: str) -> Path:
        """``root / template.format(split=split)``, or, when that folder does not exist, the template
        without ``{split}`` if that folder holds images (a root holding one split)."""
        root = Path(root)
        path = root / template.format(split=split)
        if path.is_dir() or "{split}" not in template:
            return path
        bare = root / "/".join(p for p in template.split("/") if p != "{split}")
        if (
            bare != root
            and bare.is_dir()
            and any(p.suffix.lower() in RASTER_SUFFIXES for p in bare.iterdir())
        ):
            return bare
        return path

    def labels_for(self, evaluation: bool) -> tuple[str, str]:
        """The label folder template and suffix of a training (False) or evaluation (True) split."""
        if evaluation and self.eval_label_dir is not None:
            suffix = self.eval_label_suffix if self.eval_label_suffix is not None else self.label_suffix
            return self.eval_label_dir, suffix
        return self.label_dir, self.label_suffix

    def has_split(self, root: str | Path, split: str) -> bool:
        """Whether the image folder of ``split`` exists."""
        return self.folder(root, self.image_dir, split).is_dir()


def _strip(index: dict[str, Path], suffix: str, problems: list[str]) -> dict[str, Path]:
    if not suffix:
        return index
    out: dict[str, Path] = {}
    for stem, path in index.items():
        name = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        if name in out:
            problems.append(f"{path}: same name {name!r} as {out[name]} once {suffix!r} is removed")
            continue
        out[name] = path
    return out


def discover_segmentation_split(
    root: str | Path,
    split: str,
    *,
    layout: SegmentationLayout | None = None,
    evaluation: bool = False,
    list_file: str | Path | None = None,
    require_label: bool = True,
) -> tuple[list[SegmentationSample], list[str]]:
    """The samples of ``split`` and the problems found (lines naming files); samples missing a partner
    file are left out. ``evaluation`` picks the evaluation labels when the layout has them."""
    layout = layout or SegmentationLayout()
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    problems: list[str] = []
    image_dir = layout.folder(root, layout.image_dir, split)
    if not image_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{root}: no split {split!r}: image folder {image_dir} not found (data.segmentation.image_dir "
            f"= {layout.image_dir!r}); folders found: {', '.join(found) or 'none'}"
        )
    images = _strip(_index_folder(image_dir, problems), layout.image_suffix, problems)
    labels: dict[str, Path] = {}
    label_dir = None
    if require_label:
        template, suffix = layout.labels_for(evaluation)
        label_dir = layout.folder(root, template, split)
        if not label_dir.is_dir():
            problems.append(f"{label_dir}: label folder missing (data.segmentation template {template!r})")
        labels = _strip(_index_folder(label_dir, problems), suffix, problems)
    if list_file is None:
        list_file = find_list_file(root, split)
    if list_file is not None:
        names = list(dict.fromkeys(_read_list(Path(list_file))))
    else:
        names = sorted(set(images) | set(labels))
    samples = []
    for n in names:
        where = f"listed in {list_file}" if list_file is not None else "found"
        if n not in images:
            have = f" (label {labels[n]})" if n in labels else ""
            problems.append(f"{image_dir / n}{layout.image_suffix}.*: missing image ({n!r} {where}{have})")
            continue
        if require_label and n not in labels:
            if label_dir is not None and label_dir.is_dir():
                problems.append(f"{label_dir / n}.*: missing label of {images[n]}")
            continue
        samples.append(SegmentationSample(n, images[n], labels.get(n)))
    if not samples and not problems:
        src = f"list file {list_file}" if list_file is not None else str(image_dir)
        problems.append(f"{image_dir}: split {split!r} is empty (no images in {src})")
    return samples, problems


@dataclass
class SegmentationSplitReport:
    """What the validation pass learnt about one split (role)."""

    name: str
    folder: Path
    samples: list[SegmentationSample]
    bands: int = 0
    dtype: str = ""
    sizes: set[tuple[int, int]] = field(default_factory=set)
    class_pixels: np.ndarray | None = None
    ignored_pixels: int = 0

    @property
    def uniform_size(self) -> bool:
        return len(self.sizes) == 1

    @property
    def class_fractions(self) -> list[float] | None:
        """Fraction of labelled pixels per class (None when nothing was counted)."""
        if self.class_pixels is None or self.class_pixels.sum() == 0:
            return None
        return [float(v) for v in self.class_pixels / self.class_pixels.sum()]


@dataclass
class _Result:
    problems: list[str]
    bands: int = 0
    dtype: str = ""
    size: tuple[int, int] = (0, 0)
    counts: np.ndarray | None = None
    ignored: int = 0
    stats: BandStats | None = None


def _check(
    s: SegmentationSample,
    labels: SegmentationLabels,
    full: bool,
    bands: list[int] | None,
    collect_stats: bool,
) -> _Result:
    res = _Result(problems=[])
    try:
        img = raster_info(s.image)
        lab = raster_info(s.label) if s.label is not None else None
    except DataError as exc:
        res.problems.append(str(exc))
        return res
    res.bands, res.dtype, res.size = img.count, img.dtype, img.size
    if lab is not None and lab.size != img.size:
        res.problems.append(
            f"{lab.path}: label size {lab.height}x{lab.width} differs from {img.path} ({img.height}x{img.width})"
        )
    if bands is not None and any(not 1 <= b <= img.count for b in bands):
        res.problems.append(f"{img.path}: data.bands {bands} not available (image has {img.count} bands)")
    if res.problems or not full:
        return res
    try:
        x = read_raster(s.image, bands=bands)
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            n = int((~np.isfinite(x)).sum())
            res.problems.append(f"{s.image}: {n} NaN/inf pixel value(s); fill them before training")
        elif collect_stats:
            res.stats = BandStats()
            for r in range(0, x.shape[1], _STATS_ROWS):
                res.stats.update(x[:, r : r + _STATS_ROWS])
    except DataError as exc:
        res.problems.append(str(exc))
    if s.label is not None:
        try:
            ids = labels.apply(read_raster(s.label), s.label)
            res.counts = labels.class_counts(ids)
            res.ignored = int(ids.size - res.counts.sum())
        except DataError as exc:
            res.problems.append(str(exc))
    return res


def validate_segmentation_dataset(
    root: str | Path,
    roles: dict[str, str],
    *,
    labels: SegmentationLabels,
    layout: SegmentationLayout | None = None,
    list_files: dict[str, str | Path | None] | None = None,
    mode: str = "full",
    bands: list[int] | None = None,
    stats_role: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> DatasetReport:
    """Validate the splits of ``roles`` (role -> split folder name, e.g. ``{"train": "train", "val":
    "val"}``; roles other than ``"train"`` use the evaluation labels); raise one ``DataError`` listing
    every problem. Returns a ``DatasetReport`` whose ``splits`` are keyed by role.

    Args:
        labels: the label rule (values/colours -> class ids).
        layout: folders and name suffixes.
        list_files: optional list file per role.
        mode: ``"full"`` (decode every file: label values, NaN, truncation), ``"header"`` or ``"off"``.
        bands: 1-based bands that will be used.
        stats_role: role whose per-band mean/std to compute (needs ``mode="full"``).
    """
    if mode not in ("full", "header", "off"):
        raise DataError(f"data.validate must be 'full', 'header' or 'off', got {mode!r}")
    root, layout = Path(root), layout or SegmentationLayout()
    workers = workers or min(8, os.cpu_count() or 1)
    problems: list[str] = []
    reports: dict[str, SegmentationSplitReport] = {}
    stats = BandStats() if stats_role is not None and mode == "full" else None
    for role, split in roles.items():
        try:
            samples, found = discover_segmentation_split(
                root, split, layout=layout, evaluation=role != "train", list_file=(list_files or {}).get(role)
            )
        except DataError as exc:
            problems.append(str(exc))
            continue
        problems.extend(found)
        folder = samples[0].image.parent if samples else root
        rep = SegmentationSplitReport(
            split, folder, samples, class_pixels=np.zeros(labels.num_classes, np.int64)
        )
        reports[role] = rep
        if mode == "off" or not samples:
            continue
        want = stats is not None and role == stats_role

        def run(s: SegmentationSample, want: bool = want) -> _Result:
            return _check(s, labels, mode == "full", bands, want)

        results = check_in_threads(run, samples, split, workers, progress)
        uniform = UniformSplit()
        for s, r in zip(samples, results):
            problems.extend(r.problems)
            if r.problems:
                continue
            uniform.add(r.bands, r.dtype, s.image, problems)
            rep.sizes.add(r.size)
            if r.counts is not None:
                rep.class_pixels += r.counts
                rep.ignored_pixels += r.ignored
            if want and r.stats is not None:
                stats.merge(r.stats)
        if uniform.first is not None:
            rep.bands, rep.dtype = uniform.first[0], uniform.first[1]
    splits_differ(reports.values(), problems)
    if problems:
        raise DataError(_format_problems(root, problems))
    if stats is not None and stats.total is None:
        stats = None
    return DatasetReport(root, reports, stats)  # type: ignore[arg-type]
