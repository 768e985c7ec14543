"""Running a study: the driver loop (``driver``), what it records (``recording``), several drivers on one study
(``coordination``), Optuna proposals seeded per trial (``proposals``), early stopping (``fidelity``), Ray
placement (``ray_tune``) and held-out confirmation (``confirm``)."""
