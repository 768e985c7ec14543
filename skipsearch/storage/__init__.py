"""The database: URL checks (``urls``), skipsearch's tables (``tables``) and the one store that reads and
writes them (``store``). Optuna's storage lives in the same database, opened from the same URL."""

from skipsearch.storage import urls
from skipsearch.storage.store import Store
from skipsearch.storage.urls import engine_kwargs, shown as safe_url

__all__ = ["Store", "engine_kwargs", "safe_url", "urls"]
