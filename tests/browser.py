"""Headless Chromium (Debian's ``chromium``) for the tests: a screenshot of a page and its rendered DOM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from PIL import Image, ImageStat


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(url: str, *extra: str, budget_ms: int = 15000) -> subprocess.CompletedProcess:
    exe = chromium()
    assert exe is not None
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1400,1000", f"--virtual-time-budget={budget_ms}", *extra, url],
                          capture_output=True, text=True, timeout=120)


def screenshot(url: str, path: Path) -> Path:
    _run(url, f"--screenshot={path}")
    assert path.is_file(), f"chromium wrote no screenshot of {url}"
    return path


def rendered_text(url: str) -> str:
    """The DOM after the page's scripts ran."""
    return _run(url, "--dump-dom").stdout


def blank_fraction(path: Path) -> float:
    """Share of the picture in its single most common colour (1.0: blank)."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=rgb.width * rgb.height)
        return max(count for count, _ in colours) / (rgb.width * rgb.height)


def spread(path: Path) -> float:
    """Mean standard deviation over the RGB channels."""
    with Image.open(path) as img:
        return sum(ImageStat.Stat(img.convert("RGB")).stddev) / 3
