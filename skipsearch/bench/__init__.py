"""``skipsearch bench``: the performance record, measured side by side in one run and printed as ratios (a
noisy machine moves both sides), each a ``Record`` {name, value, target, met, device} that ``--json FILE``
writes for comparing commits.

``whole_trials`` times whole trials, ``parts`` a trial's parts against their bare equivalents (sampler,
features, FID and KID, common random numbers), ``workers`` Ray against in-process, ``hooks`` the skip hooks
per network call, ``imports`` start-up (``skipsearch.apply`` against torch, the CLI's --help and readers
against Optuna; ``fresh`` runs one command in a new interpreter). A method names the suites its specs get
(``Method.bench_suites``; ``suites`` runs them). Nothing outside ``bench/`` imports it.
"""

from skipsearch.bench.measurements import Record, show, write_json

__all__ = ["Record", "show", "write_json"]
