"""One schema each: typed records match their tables, results survive the Ray boundary, and the "study
changed" check covers every spec field that decides the numbers (derived from the spec models)."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

import pytest
from conftest import tiny_dt_spec_dict, tiny_spec_dict

from skipsearch.methods import METHODS
from skipsearch.results import Artifact, Rung, Score
from skipsearch.spec import Section, changed_science, parse_spec, science
from skipsearch.storage import tables
from skipsearch.storage.records import ConfirmationRow, RungRow, StepRow, TrialRow

FILLED_BY_STORE = {"id", "created_at"}


@pytest.mark.parametrize(("record", "table"), [(TrialRow, tables.trials), (RungRow, tables.rungs),
                                               (StepRow, tables.steps), (ConfirmationRow, tables.confirmations)])
def test_records_are_their_tables(record, table):
    assert {f.name for f in fields(record)} == {c.name for c in table.columns} - FILLED_BY_STORE


def test_a_rung_crosses_the_ray_boundary_unchanged():
    score = Score(fid=1.5, kid=0.01, kid_std=0.002, n=64, seed_start=0, nfe=5, extractor="x", ref_hash="ab",
                  model_id="m", model_hash="cd", wall_s=1.0, timings={"network": 0.5})
    rung = Rung(score=score, progress=6, final=True, step=6, source=score,
                artifact=Artifact(path="/w/t.pt", sha256_16="0" * 16), wall_s=2.0, timings={"train": 1.0})
    assert Rung.from_json(rung.to_json()) == rung
    plain = Rung(score=score, progress=64, final=False, wall_s=1.0)
    assert Rung.from_json(plain.to_json()) == plain


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    return [leaf for k, v in tree.items()
            for leaf in (_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])]


@pytest.mark.parametrize("raw", [tiny_spec_dict("s"), tiny_dt_spec_dict("d")], ids=["skip", "diff"])
def test_every_field_decides_the_numbers_unless_declared_operational(raw):
    spec = parse_spec(raw)
    checked = set(_leaves(science(spec)))

    def every(section: Section, prefix: str = "") -> set[str]:
        out = set()
        for name in type(section).model_fields:
            value, dotted = getattr(section, name), f"{prefix}{name}"
            if name in section.operational:
                continue
            out |= every(value, f"{dotted}.") if isinstance(value, Section) else {dotted}
        return out

    assert checked == every(spec)
    assert {"kind", "model.name", "sampler.steps", "metric.batch_size", "search.rho_range" if raw.get("kind") is None
            else "finetune.bank_seed"} <= checked
    assert not checked & {"name", "storage", "search.trials", "search.seed", "confirm.n"}


def test_changed_science_names_the_field():
    first = parse_spec(tiny_spec_dict("s")).model_dump(mode="json")
    assert changed_science(first, parse_spec(tiny_spec_dict("s", search={"trials": 99}))) == []
    changed = changed_science(first, parse_spec(tiny_spec_dict("s", metric={"batch_size": 32})))
    assert changed == ["metric.batch_size"]
    older = {k: v for k, v in first.items() if k != "description"}  # a field missing from an older stored spec
    assert changed_science(older, parse_spec(tiny_spec_dict("s"))) == []


def test_every_method_is_complete():
    for kind, method in METHODS.items():
        assert method.kind == kind and get_args(method.spec_class.model_fields["kind"].annotation) == (kind,)
        assert method.coefficient_types and method.title
