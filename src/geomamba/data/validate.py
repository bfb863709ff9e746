"""One pass over a dataset's files before training: every problem found, in one error.

``validate_dataset`` checks, for each split asked for: missing partner files, A/B/label size mismatch,
band-count (and dtype) mismatch between dates or within the split, label values outside the allowed set
(see ``geomamba.data.labels``), unreadable or truncated files, non-finite values in float images and empty
splits. It raises one ``DataError`` listing each bad file and its problem. In ``"full"`` mode every file is
decoded (this is what detects truncation and bad label values); ``"header"`` reads headers only.

The same pass can accumulate per-band normalisation statistics (mean/std of both dates) of one split, so
that training needs a single read of the data before it starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from geomamba.data.errors import DataError
from geomamba.data.io import raster_info, read_raster
from geomamba.data.labels import LabelMapping
from geomamba.data.layout import Sample, discover_split

__all__ = ["BandStats", "DatasetReport", "SplitReport", "check_sample", "validate_dataset"]

MAX_LISTED = 40


@dataclass
class BandStats:
    """Running per-band sums (float64) giving mean and standard deviation of pixel values."""

    count: int = 0
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None

    def update(self, image: np.ndarray) -> None:
        """Add the pixels of a ``(C, H, W)`` image."""
        x = image.reshape(image.shape[0], -1).astype(np.float64)
        s, sq = x.sum(1), np.square(x).sum(1)
        if self.total is None:
            self.total, self.total_sq = s, sq
        else:
            self.total, self.total_sq = self.total + s, self.total_sq + sq
        self.count += x.shape[1]

    def merge(self, other: BandStats) -> None:
        if other.total is None:
            return
        if self.total is None:
            self.total, self.total_sq, self.count = other.total.copy(), other.total_sq.copy(), other.count
            return
        self.total, self.total_sq = self.total + other.total, self.total_sq + other.total_sq
        self.count += other.count

    @property
    def mean(self) -> list[float]:
        if self.total is None:
            raise DataError("no pixels were seen: cannot compute normalisation statistics")
        return [float(v) for v in self.total / self.count]

    @property
    def std(self) -> list[float]:
        mean = np.asarray(self.mean)
        var = np.maximum(self.total_sq / self.count - mean**2, 0.0)
        return [float(max(v, 1e-6)) for v in np.sqrt(var)]


@dataclass
class SplitReport:
    """What the validation pass learnt about one split."""

    name: str
    folder: Path
    samples: list[Sample]
    bands: int
    dtype: str
    sizes: set[tuple[int, int]] = field(default_factory=set)
    changed_pixels: int = 0
    labelled_pixels: int = 0

    @property
    def uniform_size(self) -> bool:
        return len(self.sizes) == 1

    @property
    def changed_fraction(self) -> float | None:
        return self.changed_pixels / self.labelled_pixels if self.labelled_pixels else None


@dataclass
class DatasetReport:
    """Per split reports, and the normalisation statistics when they were asked for."""

    root: Path
    splits: dict[str, SplitReport]
    stats: BandStats | None = None


@dataclass
class _SampleResult:
    problems: list[str]
    bands: int = 0
    dtype: str = ""
    size: tuple[int, int] = (0, 0)
    changed: int = 0
    labelled: int = 0
    stats: BandStats | None = None


def check_sample(
    sample: Sample,
    *,
    mapping: LabelMapping,
    full: bool = True,
    bands: list[int] | None = None,
    collect_stats: bool = False,
) -> _SampleResult:
    """Check one sample; returns its problems (lines naming files) and what was learnt."""
    res = _SampleResult(problems=[])
    infos = {}
    for key, path in (("A", sample.a), ("B", sample.b), ("label", sample.label)):
        if path is None:
            continue
        try:
            infos[key] = raster_info(path)
        except DataError as exc:
            res.problems.append(str(exc))
    if res.problems:
        return res
    a, b = infos["A"], infos["B"]
    res.bands, res.dtype, res.size = a.count, a.dtype, a.size
    if a.size != b.size:
        res.problems.append(
            f"{b.path}: size {b.height}x{b.width} differs from {a.path} ({a.height}x{a.width})"
        )
    if a.count != b.count:
        res.problems.append(f"{b.path}: {b.count} band(s) but {a.path} has {a.count} (dates must match)")
    elif a.dtype != b.dtype:
        res.problems.append(f"{b.path}: dtype {b.dtype} but {a.path} is {a.dtype} (dates must match)")
    if bands is not None:
        bad = [x for x in bands if not 1 <= x <= a.count]
        if bad:
            res.problems.append(f"{a.path}: data.bands {bad} not available (image has {a.count} bands)")
    if "label" in infos:
        lab = infos["label"]
        if lab.size != a.size:
            res.problems.append(
                f"{lab.path}: label size {lab.height}x{lab.width} differs from {a.path} ({a.height}x{a.width})"
            )
    if res.problems or not full:
        return res
    stats = BandStats() if collect_stats else None
    for path in (sample.a, sample.b):
        try:
            img = read_raster(path, bands=bands)
        except DataError as exc:
            res.problems.append(str(exc))
            continue
        if img.dtype.kind == "f" and not np.isfinite(img).all():
            n = int((~np.isfinite(img)).sum())
            res.problems.append(f"{path}: {n} NaN/inf pixel value(s); fill them before training")
            continue
        if stats is not None:
            stats.update(img)
    if sample.label is not None:
        try:
            label = mapping.squeeze(read_raster(sample.label), sample.label)
            problem = mapping.problem(label)
            if problem is not None:
                res.problems.append(f"{sample.label}: {problem}")
            else:
                ids = mapping.apply(label, sample.label)
                res.changed = int((ids == 1).sum())
                res.labelled = int((ids <= 1).sum())
        except DataError as exc:
            res.problems.append(str(exc))
    res.stats = stats
    return res


def _format_problems(root: Path, problems: list[str]) -> str:
    if len(problems) == 1:  # one line, naming the file
        return f"dataset {root}: {problems[0]}"
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{len(problems)} problem(s) in dataset {root}:\n  - " + "\n  - ".join(shown) + more


def check_in_threads(
    run: Callable[[Any], Any], samples: list, split: str, workers: int, progress: bool
) -> list:
    """``run(sample)`` for every sample in ``workers`` threads, with a progress bar; results in sample order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            tqdm(
                pool.map(run, samples),
                total=len(samples),
                desc=f"checking {split}",
                disable=not progress or None,
                leave=False,
            )
        )


class UniformSplit:
    """The bands and dtype of a split's first good file; a problem line for each file that differs."""

    def __init__(self) -> None:
        self.first: tuple[int, str, Path] | None = None

    def add(self, bands: int, dtype: str, path: Path, problems: list[str]) -> None:
        if self.first is None:
            self.first = (bands, dtype, path)
        elif (bands, dtype) != self.first[:2]:
            problems.append(
                f"{path}: {bands} band(s) {dtype}, but {self.first[2]} has {self.first[0]} band(s) "
                f"{self.first[1]} (a split must be uniform)"
            )


def splits_differ(reports: Iterable[Any], problems: list[str]) -> None:
    """A problem line when the splits' reports (``bands``, ``dtype``, ``folder``) differ in bands/dtype."""
    kinds = {(r.bands, r.dtype): r for r in reports if r.bands}
    if len(kinds) > 1:
        problems.append(
            "splits differ in bands/dtype: "
            + "; ".join(f"{r.folder} has {r.bands} band(s) {r.dtype}" for r in kinds.values())
        )


def validate_dataset(
    root: str | Path,
    splits: Iterable[str],
    *,
    mapping: LabelMapping | None = None,
    list_files: dict[str, str | Path | None] | None = None,
    mode: str = "full",
    bands: list[int] | None = None,
    stats_split: str | None = None,
    require_label: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> DatasetReport:
    """Validate the given splits of ``root``; raise one ``DataError`` listing every problem.

    Args:
        root: dataset root (see ``geomamba.data.layout``).
        splits: split names, e.g. ``("train", "val")``.
        mapping: label value rule (default: 0/1 or 0/255, nothing ignored).
        list_files: optional list file per split name.
        mode: ``"full"`` (decode every file), ``"header"`` (headers only) or ``"off"`` (only find files).
        bands: 1-based bands that will be used (checked to exist).
        stats_split: split whose per-band mean/std (both dates) to compute (needs ``mode="full"``).
        require_label: whether label files are required.
        workers: reader threads (default: up to 8).
    """
    if mode not in ("full", "header", "off"):
        raise DataError(f"data.validate must be 'full', 'header' or 'off', got {mode!r}")
    root = Path(root)
    mapping = mapping or LabelMapping()
    list_files = list_files or {}
    workers = workers or min(8, os.cpu_count() or 1)
    problems: list[str] = []
    reports: dict[str, SplitReport] = {}
    stats = BandStats() if stats_split is not None else None
    for split in dict.fromkeys(splits):
        try:
            samples, found = discover_split(
                root, split, list_file=list_files.get(split), require_label=require_label
            )
        except DataError as exc:
            problems.append(str(exc))
            continue
        problems.extend(found)
        folder = samples[0].a.parent.parent if samples else root
        report = SplitReport(split, folder, samples, bands=0, dtype="")
        reports[split] = report
        if mode == "off" or not samples:
            continue
        want_stats = stats is not None and split == stats_split and mode == "full"

        def run(s: Sample, want_stats: bool = want_stats) -> _SampleResult:
            return check_sample(
                s, mapping=mapping, full=mode == "full", bands=bands, collect_stats=want_stats
            )

        results = check_in_threads(run, samples, split, workers, progress)
        uniform = UniformSplit()
        for s, r in zip(samples, results):
            problems.extend(r.problems)
            if r.problems:
                continue
            uniform.add(r.bands, r.dtype, s.a, problems)
            report.sizes.add(r.size)
            report.changed_pixels += r.changed
            report.labelled_pixels += r.labelled
            if want_stats and r.stats is not None:
                stats.merge(r.stats)
        if uniform.first is not None:
            report.bands, report.dtype = uniform.first[0], uniform.first[1]
    splits_differ(reports.values(), problems)
    if problems:
        raise DataError(_format_problems(root, problems))
    if stats is not None and stats.total is None:
        stats = None
    return DatasetReport(root, reports, stats)
