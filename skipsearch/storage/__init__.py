"""The database: URL checks (``urls``), skipsearch's tables (``tables``) and the one store that reads and
writes them (``store``). Optuna's storage lives in the same database, opened from the same URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skipsearch.storage import urls
from skipsearch.storage.urls import engine_kwargs, shown as safe_url

if TYPE_CHECKING:
    from skipsearch.storage.store import Store

__all__ = ["Store", "engine_kwargs", "safe_url", "urls"]


def __getattr__(name: str):
    """``Store`` on first use: it brings pandas, which the CLI's start (every ``--help``, the URL checks) must not
    pay for."""
    if name == "Store":
        from skipsearch.storage.store import Store

        return Store
    raise AttributeError(f"module 'skipsearch.storage' has no attribute {name!r}")
