"""The self-contained HTML report: tables and embedded figures, rendered by headless Chromium if present."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pytest
from PIL import Image

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
IMG = re.compile(r'<img class="figure" alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def test_report_is_self_contained(compare_exp):
    _, result = compare_exp
    page = (result.folder / "report.html").read_text()
    assert page.count("<table") == 3  # accuracy, efficiency (one dataset), runs
    images = IMG.findall(page)
    assert [alt for alt, _ in images] == ["error maps of synth", "loss curves"]
    sizes = [Image.open(io.BytesIO(base64.b64decode(data))).size for _, data in images]
    assert sizes[0] == Image.open(result.folder / "figures" / "errors_synth.png").size
    # Nothing is fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    for label in ("tiny_change_net_test", "narrow", "Precision", "Kappa", "Inference (pairs/s)"):
        assert f"<td>{label}</td>" in page or f"<th>{label}</th>" in page, label
    assert re.search(r"<td class=num>(<b>)?\d+\.\d\d(</b>)?</td>", page)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_report_renders_in_headless_chromium(compare_exp, tmp_path):
    _, result = compare_exp
    # A copy of the report with a probe that records, once loaded, the decoded size of every image.
    probe = (
        "<script>window.addEventListener('load', () => document.body.setAttribute('data-images', "
        "[...document.images].map(i => i.naturalWidth + 'x' + i.naturalHeight).join(',')));</script>"
    )
    page = (result.folder / "report.html").read_text().replace("</body>", probe + "</body>")
    copy = tmp_path / "report.html"
    copy.write_text(page)
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        copy.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count("<table") == 3 and dom.count("<tr>") >= 2 + 2 + 1
    assert "<td>narrow</td>" in dom
    rendered = re.search(r'data-images="([^"]*)"', dom).group(1).split(",")
    expected = [
        f"{w}x{h}"
        for w, h in (
            Image.open(result.folder / "figures" / f).size for f in ("errors_synth.png", "loss_curves.png")
        )
    ]
    assert rendered == expected
