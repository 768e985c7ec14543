"""Hostile inputs, as hypothesis strategies: malformed specs and coefficient files, junk bytes.

Shared by the fuzz tests (tests/test_hostile_inputs.py) and by ``scripts/probe_inputs.py``, which prints
the table of tries, clean answers and unclean ones.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from conftest import tiny_dt_spec_dict, tiny_spec_dict

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**20]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 1e-320, 3e38]),
    st.text(max_size=40),
    st.sampled_from(["", "linear", "heun", "digits", "folder:", "npz:/nonexistent.npz", "cuda", "tpe", "x" * 5000,
                     "../../etc/passwd", "embedded-digits\x00", "postgresql://u:p@h:1/d", "1e20"]),
)
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)


def _paths(doc: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in doc.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out += _paths(value, prefix + (key,))
    return out


def _mutate(doc: dict, path: tuple, action: str, value) -> None:
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    if action == "delete":
        node.pop(last, None)
    elif action == "unknown":
        node[f"{last}_typo"] = value
    else:
        node[last] = value


@st.composite
def malformed_dicts(draw, base: dict) -> dict:
    """A valid document with one to three fields replaced by junk, deleted, or joined by an unknown one."""
    import copy

    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        _mutate(doc, path, draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown"])),
                draw(JUNK))
    return doc


SPEC_BASES = [tiny_spec_dict("fuzz"), tiny_dt_spec_dict("fuzz-dt"),
              tiny_spec_dict("fuzz-tw", search={"family": "time_window"})]
SPECS = st.sampled_from(SPEC_BASES).flatmap(malformed_dicts)

VALID_PROVENANCE = {
    "study": "s", "trial": 3, "role": "search", "storage": "sqlite:///x.db",
    "model": {"id": "embedded-digits", "hash": "0123456789abcdef"},
    "sampler": {"name": "heun", "steps": 3, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}, "nfe": 5,
    "metric": {"extractor": "skipsearch-digits", "reference": "digits", "rungs": [], "reference_hash":
               "0123456789abcdef", "batch_size": 64, "kid_subset_size": 32},
    "search": {"n": 64, "seed_start": 0, "fid": 1.5, "kid": 0.01, "delta_fid": -0.1},
    "confirmation": {"n": 96, "heldout_fid": 1.2, "delta_fid": -0.05, "delta_fid_std": 0.01,
                     "seed_sets": [{"seed_start": 10000, "fid": 1.2}]},
    "versions": {"torch": "2.14.1"}, "exported_at": "2026-11-24T00:00:00+00:00",
}
COEFFICIENT_BASES = [
    {"format": "skipsearch-coefficients/1", "kind": "skip_tuning",
     "coefficients": {"family": "linear", "rho_top": 1.0, "rho_bottom": 0.8}, "provenance": VALID_PROVENANCE},
    {"format": "skipsearch-coefficients/1", "kind": "skip_tuning",
     "coefficients": {"family": "per_level", "rho": [1.0, 0.9, 0.8]}, "provenance": VALID_PROVENANCE},
    {"format": "skipsearch-coefficients/1", "kind": "skip_tuning",
     "coefficients": {"family": "time_window", "rho_top": 1.0, "rho_bottom": 0.8, "sigma_lo": 0.1,
                      "sigma_hi": 10.0}, "provenance": VALID_PROVENANCE},
    {"format": "skipsearch-coefficients/1", "kind": "diff_tuning",
     "coefficients": {"family": "diff_tuning", "s": 1.0, "s_prime": 1.0, "r": 0.2, "lam": 0.1, "lr": 1e-3,
                      "steps": 6},
     "provenance": VALID_PROVENANCE | {"weights": {"path": "/nonexistent/w.pt", "sha256_16": "0123456789abcdef"}}},
]
COEFFICIENT_FILES = st.tuples(st.sampled_from(COEFFICIENT_BASES).flatmap(malformed_dicts),
                              st.sampled_from(["yaml", "json", "toml"]))

RAW_TEXTS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.sampled_from([
        "a: &a [1, 2]\nb: *a\n",  # an alias
        "a: &a ['x','x','x','x','x','x','x','x','x']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b]\n",
        "[" * 5000 + "]" * 5000, "- " * 3000 + "x", "{" * 100 + "}" * 100, "name: x\nname: y\n", "kind: [x]\n",
        "name: x\nkind: {a: 1}\n", "!!python/object:os.system 'touch /tmp/pwned'", "name: x\nmetric: {n: 1e400}\n",
        "name: x\nmetric:\n  seed: 1.0e20\n", "n: " + "9" * 5000, "\t- x", "name: x\n\x00\n", "%YAML 9.9\n---\na: 1",
    ]),
)
