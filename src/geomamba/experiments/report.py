"""The report of an experiment: ``results.csv``, ``results.md``, ``report.html`` and ``figures/``.

- ``results.csv``: one row per run (every planned run once, unfinished ones with their status and empty
  values); scores of the change class on the test split as fractions in [0, 1]; ``params_M``; ``GFLOPs``
  and ``GMACs`` of one pair of ``efficiency.input_size``; ``infer_pairs_per_s`` / ``train_pairs_per_s``
  from the timed loops (``geomamba.experiments.speed``) with their batch, size, precision and device.
- ``results.md``: per dataset an accuracy table (percent, best value in bold), an efficiency table and the
  error-map figure; then the loss curves and the list of runs.
- ``report.html``: the same tables and figures in one self-contained file (images embedded as base64).
- ``figures/errors_<dataset>.png`` (samples x models, see ``geomamba.experiments.figures``) and
  ``figures/loss_curves.png``.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from geomamba.engine.config import config_to_dict
from geomamba.experiments.config import ExperimentConfig
from geomamba.experiments.figures import (
    comparison_figure,
    load_figure_samples,
    loss_curves_figure,
    read_prediction,
)
from geomamba.experiments.plan import PlannedRun
from geomamba.experiments.runner import read_json, read_marker, run_status

__all__ = ["METRICS", "ResultRow", "build_report", "collect_rows"]

METRICS = ("Precision", "Recall", "F1", "IoU", "OA", "Kappa")
CSV_COLUMNS = (
    "dataset",
    "run",
    "model",
    "version",
    "code",
    "groups",
    "status",
    *METRICS,
    "params_M",
    "GFLOPs",
    "GMACs",
    "infer_pairs_per_s",
    "train_pairs_per_s",
    "speed_batch",
    "speed_input",
    "precision",
    "device",
    "epochs",
    "best_epoch",
    "run_dir",
)


@dataclass
class ResultRow:
    """One run in the tables (values None until it has finished)."""

    run: PlannedRun
    status: str
    marker: dict[str, Any] | None

    def get(self, column: str) -> Any:
        r, m = self.run, self.marker or {}
        speed = m.get("speed") or {}
        values = {
            "dataset": r.dataset,
            "run": r.run,
            "model": r.model,
            "version": r.version,
            "code": r.code,
            "groups": ";".join(r.groups) or None,
            "status": self.status,
            "params_M": m["params"] / 1e6 if "params" in m else None,
            "GFLOPs": m.get("gflops"),
            "GMACs": m.get("gmacs"),
            "infer_pairs_per_s": speed.get("infer_pairs_per_s"),
            "train_pairs_per_s": speed.get("train_pairs_per_s"),
            "speed_batch": speed.get("batch_size"),
            "speed_input": speed.get("input_size"),
            "precision": speed.get("precision"),
            "device": speed.get("device_name") or m.get("device"),
            "epochs": m.get("epochs"),
            "best_epoch": m.get("best_epoch"),
            "run_dir": str(r.run_dir),
        }
        if column in METRICS:
            return (m.get("scores") or {}).get(column)
        return values[column]


def collect_rows(runs: Sequence[PlannedRun]) -> list[ResultRow]:
    """A row per planned run, with its finished marker when it matches the run's config."""
    rows = []
    for r in runs:
        status = run_status(r)
        marker = read_marker(r)
        if status == "changed" and marker is not None:
            status = "finished (older config)"
        rows.append(ResultRow(r, status, marker))
    return rows


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return float(f"{v:.6g}") if isinstance(v, float) else v


def write_csv(rows: Sequence[ResultRow], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for row in rows:
            w.writerow([_csv_value(row.get(c)) for c in CSV_COLUMNS])
    return path


# --------------------------------------------------------------------------------------------------
# Tables as (header, rows of cells) with the best value per column marked.


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    best: set[tuple[int, int]]
    note: str = ""


def _fmt(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _table(
    rows: Sequence[ResultRow],
    ident: list[tuple[str, Callable[[ResultRow], str]]],
    values: list[tuple[str, str, int, float, str]],
    note: str = "",
) -> Table:
    """``values``: (header, column, digits, scale, best = "max" | "min" | "")."""
    out, best = [], set()
    for row in rows:
        cells = [f(row) for _, f in ident]
        for _, col, digits, scale, _ in values:
            v = row.get(col)
            cells.append(_fmt(v * scale if v is not None else None, digits))
        out.append(cells)
    for j, (_, col, digits, scale, rule) in enumerate(values):
        if not rule:
            continue
        vals = [
            (i, round(row.get(col) * scale, digits))
            for i, row in enumerate(rows)
            if isinstance(row.get(col), (int, float)) and not math.isnan(row.get(col))
        ]
        if len(vals) < 2:
            continue
        if len({v for _, v in vals}) == 1:
            continue  # all equal: nothing stands out
        target = (max if rule == "max" else min)(v for _, v in vals)
        best |= {(i, len(ident) + j) for i, v in vals if v == target}
    return Table([h for h, _ in ident] + [v[0] for v in values], out, best, note)


def _ident(kind: str) -> list[tuple[str, Callable[[ResultRow], str]]]:
    if kind == "ablate":
        return [
            ("Version", lambda r: r.run.run),
            ("Code", lambda r: r.run.code or ""),
            ("Groups", lambda r: ", ".join(r.run.groups)),
        ]
    return [("Method", lambda r: r.run.label), ("Model", lambda r: r.run.model)]


def _speed_note(rows: Sequence[ResultRow], exp: ExperimentConfig) -> str:
    speeds = [r.marker["speed"] for r in rows if r.marker and r.marker.get("speed")]
    e = exp.efficiency
    text = f"Params and GFLOPs of one pair of {e.input_size}x{e.input_size} (GMACs = GFLOPs / 2)."
    if speeds:
        devices = sorted({s["device_name"] for s in speeds})
        precisions = sorted({s["precision"] for s in speeds})
        text += (
            f" Pairs/s: {e.iters} timed steps of {e.batch_size} pairs of {e.input_size}x{e.input_size} "
            f"after {e.warmup} warm-up steps, precision {', '.join(precisions)}, on {', '.join(devices)}"
            " (each run measured in its own process on the device it trained on)."
        )
        if len(devices) > 1:
            text += " Runs were measured on different devices: compare speeds only within one device."
    return text


def dataset_tables(rows: Sequence[ResultRow], kind: str, exp: ExperimentConfig) -> tuple[Table, Table]:
    ident = _ident(kind)
    acc = _table(
        rows,
        ident,
        [(m, m, 2, 100.0, "max") for m in METRICS],
        "Scores of the change class on the test split, in percent; best in bold.",
    )
    eff = _table(
        rows,
        ident,
        [
            ("Params (M)", "params_M", 2, 1.0, "min"),
            ("GFLOPs", "GFLOPs", 2, 1.0, "min"),
            ("GMACs", "GMACs", 2, 1.0, ""),
            ("Inference (pairs/s)", "infer_pairs_per_s", 1, 1.0, "max"),
            ("Training (pairs/s)", "train_pairs_per_s", 1, 1.0, "max"),
        ],
        _speed_note(rows, exp),
    )
    return acc, eff


def runs_table(rows: Sequence[ResultRow]) -> Table:
    out = []
    for r in rows:
        m = r.marker or {}
        out.append(
            [
                r.run.key,
                r.run.model,
                r.status,
                str(m.get("epochs", "–")),
                str(m.get("best_epoch", "–")),
                str(r.run.run_dir),
            ]
        )
    return Table(["Run", "Model", "Status", "Epochs", "Best epoch", "Folder"], out, set())


def _md_table(t: Table) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    body = [
        line([f"**{c}**" if (i, j) in t.best else c for j, c in enumerate(row)])
        for i, row in enumerate(t.rows)
    ]
    text = "\n".join([line(t.header), "|" + "---|" * len(t.header), *body])
    return text + (f"\n\n{t.note}" if t.note else "")


_NUMBER = re.compile(r"^(-?\d+(\.\d+)?|–)$")


def _html_table(t: Table, cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        cells = "".join(
            ("<td class=num>" if _NUMBER.match(c) else "<td>")
            + (f"<b>{html.escape(c)}</b>" if (i, j) in t.best else html.escape(c))
            + "</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}'


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left}
th{background:#eee}td.num{text-align:right}.note{color:#555;font-size:.9em}
img.figure{max-width:100%;border:1px solid #ddd;margin:.5em 0}pre{background:#f6f6f6;padding:.8em;overflow:auto}
"""


def _figures(exp: ExperimentConfig, rows: Sequence[ResultRow], folder: Path) -> dict[str, Path]:
    figures: dict[str, Path] = {}
    folder.mkdir(parents=True, exist_ok=True)
    samples_cache = read_json(exp.folder / "figure_samples.json") or {}
    histories: dict[str, dict[str, list]] = {}
    for ds in dict.fromkeys(r.run.dataset for r in rows):
        ds_rows = [r for r in rows if r.run.dataset == ds]
        metrics = {r.run.label: read_json(r.run.run_dir / "metrics.json") for r in ds_rows}
        histories[ds] = {k: v["history"] for k, v in metrics.items() if v and v.get("history")}
        names = (samples_cache.get(ds) or {}).get("samples")
        if not names:
            continue
        d = ds_rows[0].run.config.data
        samples = load_figure_samples(
            d.root,
            d.splits.test,
            names,
            bands=d.bands,
            ignore_value=d.ignore_value,
            list_file=d.list_files.test,
        )
        preds = {
            r.run.label: {
                n: read_prediction(r.run.run_dir / "figure" / f"{n}.png") if r.marker else None for n in names
            }
            for r in ds_rows
        }
        fig = comparison_figure(samples, preds, title=f"{exp.name}: {ds}")
        figures[f"errors_{ds}"] = folder / f"errors_{ds}.png"
        fig.savefig(figures[f"errors_{ds}"], dpi=exp.figure.dpi)
    fig = loss_curves_figure(histories)
    figures["loss_curves"] = folder / "loss_curves.png"
    fig.savefig(figures["loss_curves"], dpi=exp.figure.dpi)
    return figures


def build_report(exp: ExperimentConfig, kind: str, runs: Sequence[PlannedRun]) -> dict[str, Path]:
    """Write every report file of an experiment from its run folders; returns their paths by name."""
    from geomamba import __version__

    folder = exp.folder
    rows = collect_rows(runs)
    out = {"csv": write_csv(rows, folder / "results.csv")}
    figures = _figures(exp, rows, folder / "figures")
    out.update(figures)
    title = f"Experiment {exp.name} ({'comparison' if kind == 'compare' else 'ablation'})"
    done = sum(r.status == "finished" for r in rows)
    meta = (
        f"{done} of {len(rows)} runs finished. Config {exp.path}; recipe "
        f"{exp.recipe if isinstance(exp.recipe, str) else '(inline)'}. geomamba {__version__}, "
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')}."
    )
    md = [f"# {title}", "", meta, ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(meta)}</p>"]
    for ds in dict.fromkeys(r.run.dataset for r in rows):
        ds_rows = [r for r in rows if r.run.dataset == ds]
        acc, eff = dataset_tables(ds_rows, kind, exp)
        md += [
            f"## {ds}",
            "",
            "### Accuracy",
            "",
            _md_table(acc),
            "",
            "### Efficiency",
            "",
            _md_table(eff),
            "",
        ]
        body += [
            f"<h2>{html.escape(ds)}</h2>",
            "<h3>Accuracy</h3>",
            _html_table(acc, "accuracy"),
            "<h3>Efficiency</h3>",
            _html_table(eff, "efficiency"),
        ]
        fig = figures.get(f"errors_{ds}")
        if fig is not None:
            md += ["### Error maps", "", f"![error maps of {ds}](figures/{fig.name})", ""]
            body += ["<h3>Error maps</h3>", _img(fig, f"error maps of {ds}")]
    md += [
        "## Loss curves",
        "",
        "![loss curves](figures/loss_curves.png)",
        "",
        "## Runs",
        "",
        _md_table(runs_table(rows)),
        "",
    ]
    body += [
        "<h2>Loss curves</h2>",
        _img(figures["loss_curves"], "loss curves"),
        "<h2>Runs</h2>",
        _html_table(runs_table(rows), "runs"),
    ]
    recipe = rows[0].run.config if rows else None
    if recipe is not None:
        text = yaml.safe_dump(config_to_dict(recipe), sort_keys=False, default_flow_style=None)
        body += [f"<h2>Run config of {html.escape(rows[0].run.key)}</h2>", f"<pre>{html.escape(text)}</pre>"]
    out["md"] = folder / "results.md"
    out["md"].write_text("\n".join(md), encoding="utf-8")
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    out["html"] = folder / "report.html"
    out["html"].write_text(page, encoding="utf-8")
    return out
