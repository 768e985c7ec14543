"""Named subsets of the built-in data sets, as plain data: the embedded models' registry names the classes a
model was trained on when a spec is parsed, and parsing a spec (``skipsearch best``, ``export``) must not load
the data module's torch."""

from __future__ import annotations

#: scikit-learn's digits split by class: the Diff-Tuning demo pre-trains on one half and fine-tunes on the other.
DIGIT_SUBSETS: dict[str, tuple[int, ...]] = {"digits-0to4": (0, 1, 2, 3, 4), "digits-5to9": (5, 6, 7, 8, 9)}
