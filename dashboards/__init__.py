"""What ``skipsearch dashboard`` and ``skipsearch report`` are built from, installed as
``skipsearch.dashboards``: ``dashboard.toml`` (the dashboard's settings) and ``figures.py`` (the report's
figure definitions, plotly). Edit these to change what is served or drawn; the code that gathers the data
is ``skipsearch.dashboard_server`` and ``skipsearch.htmlreport``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, kw_only=True)
class DashboardSettings:
    host: str
    port: int


def dashboard_settings() -> DashboardSettings:
    """``dashboard.toml``, read from the installed package."""
    raw = tomllib.loads(resources.files(__name__).joinpath("dashboard.toml").read_text(encoding="utf-8"))
    return DashboardSettings(host=raw["host"], port=int(raw["port"]))
