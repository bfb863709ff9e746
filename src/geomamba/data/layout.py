"""Finding the samples of a change-detection dataset on disk.

Layout (LEVIR-CD, WHU-CD, S2Looking, SYSU-CD, CDD, DSIFN, open-cd style)::

    root/{train,val,test}/{A,B,label}/<name>.<ext>

with the same ``<name>`` in A, B and label (extensions may differ, e.g. ``A/x.tif`` with ``label/x.png``).
A ``root`` that directly holds ``A/B/label`` is one split, used for every split name asked for.
Optional list files (one name per line, with or without extension; ``#`` comments) restrict a split:
given explicitly, or found at ``root/list/<split>.txt`` or ``root/<split>.txt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from geomamba.data.errors import DataError
from geomamba.data.io import RASTER_SUFFIXES

__all__ = ["DATE_DIRS", "Sample", "discover_split", "find_list_file", "resolve_split_dir"]

log = logging.getLogger(__name__)

DATE_DIRS = ("A", "B")
LABEL_DIR = "label"
# GDAL sidecar files and similar that may sit next to images and are not samples.
_SIDECAR_ENDINGS = (".aux.xml", ".ovr", ".tfw", ".pgw", ".jgw", ".prj", ".xml", ".txt", ".md", ".json")


@dataclass(frozen=True)
class Sample:
    """One bitemporal sample: its name and the files of date A, date B and (optionally) the label."""

    name: str
    a: Path
    b: Path
    label: Path | None = None


def resolve_split_dir(root: str | Path, split: str) -> Path:
    """``root/split`` when it holds ``A/``; else ``root`` itself when it holds ``A/`` (single-split root)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if (root / split / "A").is_dir():
        return root / split
    if (root / "A").is_dir():
        return root
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise DataError(
        f"{root}: no split {split!r}: expected {root / split}/A, B, label (or A, B, label directly "
        f"in {root}); folders found: {', '.join(found) or 'none'}"
    )


def find_list_file(root: str | Path, split: str) -> Path | None:
    """``root/list/<split>.txt`` or ``root/<split>.txt`` when present."""
    root = Path(root)
    for cand in (root / "list" / f"{split}.txt", root / f"{split}.txt"):
        if cand.is_file():
            return cand
    return None


def _index_folder(folder: Path, problems: list[str]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    if not folder.is_dir():
        return index
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        if p.name.lower().endswith(_SIDECAR_ENDINGS):
            continue
        if p.suffix.lower() not in RASTER_SUFFIXES:
            log.warning("%s: not an image (suffix %r), ignored", p, p.suffix)
            continue
        if p.stem in index:
            problems.append(f"{p}: two files named {p.stem!r} in {folder} ({index[p.stem].name}, {p.name})")
            continue
        index[p.stem] = p
    return index


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable list file ({exc})") from None
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line.split()[0])
            names.append(p.stem if p.suffix.lower() in RASTER_SUFFIXES else p.name)
    return names


def discover_split(
    root: str | Path,
    split: str,
    *,
    list_file: str | Path | None = None,
    require_label: bool = True,
) -> tuple[list[Sample], list[str]]:
    """The samples of ``split`` and the problems found (missing partner files, duplicates, empty split).

    Returns ``(samples, problems)``; every problem is a line naming the file and what is wrong. Samples
    with a missing partner are left out of ``samples``.
    """
    folder = resolve_split_dir(root, split)
    problems: list[str] = []
    dirs = [*DATE_DIRS, LABEL_DIR] if require_label else list(DATE_DIRS)
    for d in dirs:
        if not (folder / d).is_dir():
            problems.append(f"{folder / d}: folder missing (expected {', '.join(dirs)} in {folder})")
    index = {d: _index_folder(folder / d, problems) for d in dirs}
    if list_file is None:
        list_file = find_list_file(root, split)
    if list_file is not None:
        names = _read_list(Path(list_file))
        seen = set()
        for n in names:
            if n in seen:
                problems.append(f"{list_file}: name {n!r} listed twice")
            seen.add(n)
        names = list(dict.fromkeys(names))
    else:
        names = sorted(set().union(*(set(ix) for ix in index.values())))
    samples = []
    for n in names:
        missing = [d for d in dirs if n not in index[d]]
        if missing:
            have = [str(index[d][n]) for d in dirs if n in index[d]]
            where = f"listed in {list_file}" if list_file is not None else f"found as {', '.join(have)}"
            for d in missing:
                if (folder / d).is_dir():
                    problems.append(f"{folder / d / n}.*: missing partner file ({n!r} {where})")
            continue
        samples.append(
            Sample(n, index["A"][n], index["B"][n], index[LABEL_DIR][n] if require_label else None)
        )
    if not samples and not problems:
        src = f"list file {list_file}" if list_file is not None else f"{folder}/A"
        problems.append(f"{folder}: split {split!r} is empty (no images in {src})")
    return samples, problems
