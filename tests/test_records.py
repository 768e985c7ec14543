"""One schema each: typed records match their tables, results survive the Ray boundary, and the "study
changed" check covers every spec field that decides the numbers (derived from the spec models)."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

import pytest
from conftest import tiny_dt_spec_dict, tiny_spec_dict

from skipsearch.methods import METHODS
from skipsearch.results import Measurement, Rung, Score
from skipsearch.spec import Section, science
from skipsearch.specfile import changed_science, parse_spec
from skipsearch.storage import Store, tables
from skipsearch.storage.records import KEPT_BESIDE, ConfirmationRow, RungRow, StepRow, TrialRow

FILLED_BY_STORE = {"id", "created_at"}


@pytest.mark.parametrize(("record", "table"), [(TrialRow, tables.trials), (RungRow, tables.rungs),
                                               (StepRow, tables.steps), (ConfirmationRow, tables.confirmations)])
def test_records_are_their_tables(record, table):
    """A record's fields are its table's columns and what is kept beside them (numbers, references, extras)."""
    assert {f.name for f in fields(record)} - KEPT_BESIDE == {c.name for c in table.columns} - FILLED_BY_STORE


def test_a_rung_crosses_the_ray_boundary_unchanged():
    score = Score(fid=1.5, kid=0.01, kid_std=0.002, n=64, seed_start=0, nfe=5, extractor="x", ref_hash="ab",
                  model_id="m", model_hash="cd", wall_s=1.0, timings={"network": 0.5})
    rung = Rung(score=score, progress=6, final=True, step=6, references={"source": score},
                extras={"weights_path": "/w/t.pt", "weights_hash": "0" * 16}, wall_s=2.0, timings={"train": 1.0})
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


def test_every_number_a_record_holds_is_a_measurement_row_too(tmp_path):
    """The store writes a record's own numbers (not delta_fid) as measurements, with the record's key, in the
    same transaction; extra measurements go beside them; one number given twice with two values is a bug."""
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    common = dict(study_name="m", trial_number=2)
    trial = TrialRow(**common, role="search", state="COMPLETE", coefficients_json="{}", n=64, seed_start=0,
                     sampler_json="{}", nfe=5, model_id="m", extractor="e1", versions_json="{}", fid=17.5,
                     kid=0.25, kid_std=None, delta_fid=-1.0, references={("source", "fid"): 30.125,
                                                                         ("source", "kid"): 0.5},
                     extras={"weights_path": "/w/2.pt", "weights_hash": "ab" * 8})
    extra = (Measurement(metric="precision", extractor="e2", value=0.75),
             Measurement(metric="fid", extractor="e1", value=17.5))  # the objective again: the same row
    assert store.record_trial(trial, measurements=extra)
    store.record_rung(RungRow(**common, n=32, fid=19.0, kid=0.375), extractor="e1")
    store.record_rung(StepRow(**common, step=3, n=32, fid=21.0, references={("source", "fid"): 33.0}),
                      extractor="e1")
    assert store.record_confirmation(ConfirmationRow(**common, seed_set=1, seed_start=9, n=96, fid=16.0,
                                                     extractor="e1", kid_std=0.0625, extras={"train_seed": 7}))
    with pytest.raises(ValueError, match="two values"):
        store.record_rung(RungRow(**common, n=16, fid=25.0), extractor="e1",
                          measurements=[Measurement(metric="fid", extractor="e1", value=24.0)])
    assert store.rungs_frame("m").n.tolist() == [32]  # nothing of the refused record was written
    got = {(r.stage, r.n, r.step, r.seed_set, r.domain, r.metric, r.extractor): r.value
           for r in store.measurements_frame("m").itertuples()}
    assert got == {("trial", 64, -1, -1, "target", "fid", "e1"): 17.5,
                   ("trial", 64, -1, -1, "target", "kid", "e1"): 0.25,
                   ("trial", 64, -1, -1, "source", "fid", "e1"): 30.125,
                   ("trial", 64, -1, -1, "source", "kid", "e1"): 0.5,
                   ("trial", 64, -1, -1, "target", "precision", "e2"): 0.75,
                   ("rung", 32, -1, -1, "target", "fid", "e1"): 19.0,
                   ("rung", 32, -1, -1, "target", "kid", "e1"): 0.375,
                   ("step", 32, 3, -1, "target", "fid", "e1"): 21.0, ("step", 32, 3, -1, "source", "fid", "e1"): 33.0,
                   ("confirmation", 96, -1, 1, "target", "fid", "e1"): 16.0,
                   ("confirmation", 96, -1, 1, "target", "kid_std", "e1"): 0.0625}
    # and read back as the record was: its numbers, references and extras (no baseline yet: no dFID)
    assert store.trial("m", 2) == TrialRow(**{**trial.__dict__, "delta_fid": None})
    frame = store.trials_frame("m").iloc[0]
    assert (frame.fid, frame.kid, frame.source_fid, frame.source_kid, frame.weights_path) == (
        17.5, 0.25, 30.125, 0.5, "/w/2.pt")
    steps = store.steps_frame("m")
    assert steps[["fid", "source_fid"]].values.tolist() == [[21.0, 33.0]]
    conf = store.confirmations_frame("m")
    assert (conf.fid.tolist(), conf.kid_std.tolist(), conf.train_seed.tolist()) == ([16.0], [0.0625], [7])
    store.close()


def test_delta_fid_is_derived_from_the_completed_baseline(tmp_path):
    """dFID is a completed trial's FID minus the completed baseline's, whichever was recorded first."""
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")

    def row(number: int, role: str, state: str, fid: float | None) -> TrialRow:
        return TrialRow(study_name="d", trial_number=number, role=role, state=state, coefficients_json="{}", n=64,
                        seed_start=0, sampler_json="{}", nfe=5, model_id="m", extractor="e", versions_json="{}",
                        fid=fid)

    store.record_trial(row(1, "search", "COMPLETE", 10.25))  # before the baseline
    assert store.trial("d", 1).delta_fid is None
    store.record_trial(row(0, "baseline", "COMPLETE", 12.5))
    store.record_trial(row(2, "search", "PRUNED", 11.0))
    store.record_trial(row(3, "search", "FAIL", None))
    frame = store.trials_frame("d").set_index("trial_number")
    assert frame.delta_fid.loc[[0, 1]].tolist() == [0.0, -2.25]
    assert frame.delta_fid.loc[[2, 3]].isna().all()
    assert store.trial("d", 1).delta_fid == -2.25
    store.close()
