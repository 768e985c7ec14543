"""Running a study: the driver loop (``driver``), the budget every driver shares (``budget``), the steps of one
trial (``trial_steps``), the spec as stored (``stored_spec``), what it records (``recording``), trials sharing
batches (``batch_trials``), several drivers on one study (``coordination``), Optuna proposals seeded per trial
(``proposals``), early stopping (``fidelity``), Ray placement (``ray_tune``) and held-out confirmation
(``confirm``)."""
