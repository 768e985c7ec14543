"""Coefficients leaving skipsearch and coming back: ``provenance`` (what reproduces a result, as a schema),
``coeffile`` (YAML/JSON/TOML coefficient files), ``export`` (database -> file), ``verify`` (file -> FID
again) and ``apply`` (file -> the user's model). ``apply`` and what it imports load no database, Optuna or
Ray."""
