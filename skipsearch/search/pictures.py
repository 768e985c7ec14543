"""A trial's profile plots are drawn while the trial runs, off the trial path.

Drawing a matplotlib figure costs more than a small model's whole trial on a GPU. A trial's coefficients are
known when it is asked for, so its plots are drawn then, on one background thread, while the network samples;
when the trial is recorded they are ready and only uploaded (Optuna takes a trial's artifacts only before the
trial is told, so the upload itself stays on the trial path). A plot that could not be drawn is a bug: its
exception is raised in the driver when the trial is recorded, never dropped.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from skipsearch.methods.method import Profile
from skipsearch.scratch import scratch_folder


class ProfilePlots:
    """Plots drawn ahead on one worker thread (started on first use), taken by trial number."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._folder: Path | None = None
        self._drawn: dict[int, Future[list[Path]]] = {}
        self._lock = threading.Lock()

    def prepare(self, number: int, profiles: tuple[Profile, ...]) -> None:
        """Start drawing trial ``number``'s profiles."""
        if not profiles:
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skipsearch-plots")
                self._folder = scratch_folder("skipsearch-plots-")
            folder = self._folder / f"trial-{number:06d}"
            self._drawn[number] = self._pool.submit(draw_all, profiles, folder, number)

    def take(self, number: int, profiles: tuple[Profile, ...], folder: Path) -> list[Path]:
        """Trial ``number``'s plots: the ones drawn ahead (waiting for them if need be), else drawn now into
        ``folder`` (a trial recovered from another driver was never prepared here)."""
        with self._lock:
            drawn = self._drawn.pop(number, None)
        return drawn.result() if drawn is not None else draw_all(profiles, folder, number)

    def close(self) -> None:
        """Stop the thread and remove what was drawn for trials that never finished here."""
        with self._lock:
            pool, folder, self._pool, self._folder = self._pool, self._folder, None, None
            self._drawn.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def draw_all(profiles: tuple[Profile, ...], folder: Path, number: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [draw_profile(p, folder / f"profile-{i}-trial-{number:04d}.png") for i, p in enumerate(profiles)]


def draw_profile(profile: Profile, path: Path) -> Path:
    """A PNG of a ``Profile``, with matplotlib's object API (no pyplot state: it runs on the plot thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for curve in profile.curves:
        ax.plot(curve.x, curve.y, marker="o" if len(curve.x) <= 40 else None, label=curve.label)
    if profile.x_log:
        ax.set_xscale("log")
    if profile.x_ticks:
        ax.set_xticks(range(len(profile.x_ticks)), profile.x_ticks, rotation=30, ha="right", fontsize=7)
    ax.axhline(1.0 if profile.y_label == "rho" else 0.0, color="grey", lw=0.6, ls="--")
    ax.set(title=profile.title, xlabel=profile.x_label, ylabel=profile.y_label)
    if len(profile.curves) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
