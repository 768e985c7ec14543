"""A method's own results (Diff-Tuning's source-domain FID, weights file, retraining seed) are read through the
method, never by name: the frames carry every registered method's columns for every study, the held-out summary,
the verdict, the tables, the Pareto front and the coefficient file ask the method what they are.

The studies are ``tests/data/main-6a47297.db``'s (a Skip-Tuning and a Diff-Tuning study written by an older
skipsearch), upgraded once by a writer; the expected numbers are read from its rows with plain SQL, apart from
every reader. Nothing samples: the module takes seconds.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_dt_spec_dict, tiny_spec_dict
from rich.console import Console

import skipsearch
from skipsearch import terminal_tables
from skipsearch.exchange import coeffile
from skipsearch.exchange.export import stored_spec
from skipsearch.methods import METHODS, method_for
from skipsearch.search.annotations import trial_attrs
from skipsearch.search.heldout import heldout_summary, pareto_front
from skipsearch.search.second_opinion import COLUMNS as OPINION
from skipsearch.search.heldout import RACE_COLUMNS as RACE
from skipsearch.search.readout import Readout, readout
from skipsearch.search.verdict import verdict
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store
from skipsearch.storage.records import TrialRow

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "data" / "main-6a47297.db"
DT, SKIP = "old-dt", "old-skip"

# README, "Reading results with pandas": the columns before the coefficient columns, for every study
TRIALS = ["id", "study_name", "trial_number", "role", "state", "coefficients_json", "fid", "kid", "kid_std",
          "delta_fid", "n", "seed_start", "sampler_json", "nfe", "model_id", "model_hash", "extractor", "ref_hash",
          "versions_json", "wall_s", "error", "source_fid", "source_kid", "weights_path", "weights_hash",
          "evaluated", "created_at"]
PER_SEED_SET = ["id", "study_name", "trial_number", "seed_set", "seed_start", "n", "fid", "kid", "kid_std",
                "extractor", "ref_hash", "wall_s", "source_fid", "source_kid", "train_seed", "created_at", "role",
                "coefficients_json"]
SUMMARY = ["trial_number", "role", "search_fid", "search_kid", "search_source_fid", "heldout_source_fid",
           "heldout_source_fid_std", "delta_source_fid", "heldout_fid", "heldout_fid_std", "heldout_kid", "delta_fid",
           "delta_fid_std", "delta_fid_low", "delta_fid_high", "lower_on", "seed_sets", "n", "coefficients",
           *RACE,  # a race's (a study from before races, or a fixed one: its columns there, empty)
           *OPINION]  # the second opinion's (a study from before it: no opinion, its columns still there)
COEFFICIENTS = {DT: ["family", "s", "s_prime", "r", "lam", "lr", "steps"], SKIP: ["family", "rho_top", "rho_bottom"]}


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> dict:
    """The old database, upgraded by a writer; its URL, its file, and its stored numbers read with plain SQL."""
    path = tmp_path_factory.mktemp("method-columns") / "old.db"
    shutil.copyfile(OLD, path)
    url = f"sqlite:///{path}"
    Store(url).close()  # a writer upgrades it; the readers below only read
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT study_name, trial_number, stage, seed_set, n, domain, metric, value "
                          "FROM skipsearch_measurements").fetchall()
        extras = db.execute("SELECT study_name, trial_number, stage, seed_set, name, value_json "
                            "FROM skipsearch_extras").fetchall()
    numbers = pd.DataFrame(rows, columns=["study", "trial", "stage", "seed_set", "n", "domain", "metric", "value"])
    kept = pd.DataFrame(extras, columns=["study", "trial", "stage", "seed_set", "name", "value_json"])
    return {"url": url, "path": path, "numbers": numbers, "extras": kept}


def _numbers(old: dict, study: str, stage: str, domain: str, metric: str) -> pd.Series:
    n = old["numbers"]
    mine = n[(n.study == study) & (n.stage == stage) & (n.domain == domain) & (n.metric == metric)]
    return mine.set_index(["trial", "seed_set"]).value.sort_index() if stage == "confirmation" else \
        mine.set_index("trial").value.sort_index()


@pytest.mark.parametrize("study", [DT, SKIP])
def test_every_study_has_every_methods_columns_in_their_places_and_types(old, study):
    trials = skipsearch.trials(old["url"], study)
    assert list(trials.columns) == TRIALS + COEFFICIENTS[study]
    raw = skipsearch.confirmations(old["url"], study, per_seed_set=True)
    assert list(raw.columns) == PER_SEED_SET + COEFFICIENTS[study]
    summary = skipsearch.confirmations(old["url"], study)
    assert list(summary.columns) == SUMMARY + COEFFICIENTS[study]
    assert {str(trials[c].dtype) for c in ("source_fid", "source_kid")} == {"float64"}
    assert str(raw.train_seed.dtype) == "Int64" and str(raw.source_fid.dtype) == "float64"
    assert {str(summary[c].dtype) for c in SUMMARY[4:8]} == {"float64"}
    if study == SKIP:  # Skip-Tuning keeps none of them: missing, each as its type says
        assert trials[["source_fid", "source_kid"]].isna().all().all()
        assert trials.weights_path.dtype == object and trials.weights_path.map(lambda v: v is None).all()
        assert raw.train_seed.isna().all() and summary[SUMMARY[4:8]].isna().all().all()
        return
    source = _numbers(old, DT, "trial", "source", "fid")
    assert trials.set_index("trial_number").source_fid.sort_index().tolist() == source.tolist()  # exact doubles
    kept = old["extras"]
    paths = kept[(kept.study == DT) & (kept.name == "weights_path")].set_index("trial").value_json.sort_index()
    assert trials.set_index("trial_number").weights_path.sort_index().tolist() == [p.strip('"') for p in paths]
    seeds = kept[(kept.study == DT) & (kept.name == "train_seed")].set_index(["trial", "seed_set"]).value_json
    assert raw.set_index(["trial_number", "seed_set"]).train_seed.sort_index().tolist() == \
        [int(v) for v in seeds.sort_index()]


def test_the_summary_of_a_further_reference_is_its_rows_mean_and_paired_difference(old):
    spec = stored_spec(Store(old["url"], create=False), DT)
    held = _numbers(old, DT, "confirmation", "source", "fid")
    summary = skipsearch.confirmations(old["url"], DT).set_index("trial_number")
    base = summary.index[summary.role == "baseline"][0]
    for trial, row in summary.iterrows():
        mine = held.loc[trial]
        assert row.heldout_source_fid == pytest.approx(mine.mean(), rel=1e-12)
        assert row.heldout_source_fid_std == pytest.approx(mine.std(ddof=1), rel=1e-12)
        assert row.delta_source_fid == pytest.approx((mine - held.loc[base]).mean(), abs=1e-12)
        assert row.search_source_fid == _numbers(old, DT, "trial", "source", "fid").loc[trial]
    assert METHODS["diff_tuning"].references(spec) == {"source": "forgetting"}
    store = Store(old["url"], create=False)
    assert "heldout_source_fid" not in heldout_summary(store, DT, spec.confirm.n, references=())  # asked, not guessed
    assert "heldout_source_fid" not in heldout_summary(store, SKIP, 96)  # the study's own method has none


def test_the_verdict_names_a_further_reference_as_its_method_does(old):
    store = Store(old["url"], create=False)
    spec = stored_spec(store, DT)
    table = heldout_summary(store, DT, spec.confirm.n)
    judged = verdict(table, method_for(spec.kind).references(spec)).text
    w, b = table[table.role == "search"].iloc[0], table[table.role == "baseline"].iloc[0]
    assert (f" Source-domain FID (forgetting): {w.heldout_source_fid:.4f} vs baseline "
            f"{b.heldout_source_fid:.4f} ({w.delta_source_fid:+.4f}).") in judged
    assert judged.endswith(" Second opinion: none (not taken yet: `skipsearch run` the study again takes it).")
    assert "Source-domain" not in verdict(table).text  # no reference given: none is named
    skip = heldout_summary(store, SKIP, 96)
    assert "domain FID" not in verdict(skip, method_for("skip_tuning").references(parse_spec(tiny_spec_dict()))).text


def test_the_pareto_front_is_over_the_columns_it_is_given():
    frame = pd.DataFrame({"trial_number": range(7), "state": ["COMPLETE"] * 6 + ["PRUNED"],
                          "fid": [1.0, 2.0, 3.0, 4.0, 2.0, None, 0.5], "x_fid": [5.0, 3.0, 4.0, 1.0, 3.0, 0.1, 0.1],
                          "y_fid": [1.0, 1.0, 0.5, 2.0, 1.0, 0.1, 0.1]})
    assert pareto_front(frame, ("fid", "x_fid")).trial_number.tolist() == [0, 1, 4, 3]  # ties are not beaten
    assert pareto_front(frame, ("fid", "x_fid", "y_fid")).trial_number.tolist() == [0, 1, 4, 2, 3]
    assert pareto_front(frame, ("fid", "absent_fid")).empty  # a study without that number: no front


def test_objectives_are_columns_and_values_read_them():
    single = parse_spec(tiny_dt_spec_dict())
    double = parse_spec(tiny_dt_spec_dict(search={"objectives": ["target_fid", "source_fid"]}))
    dt, skip = method_for("diff_tuning"), method_for("skip_tuning")
    numbers = {"fid": 12.5, "source_fid": 20.25, "source_kid": 0.5}
    assert dt.objectives(single) == ("fid",) and dt.values(single, numbers) == 12.5
    assert dt.objectives(double) == ("fid", "source_fid") and dt.values(double, numbers) == [12.5, 20.25]
    assert dt.metric_names(double) == ["target FID", "source FID"]
    assert skip.values(parse_spec(tiny_spec_dict()), {"fid": 3.0}) == 3.0
    assert readout(single).front == ("fid", "source_fid") and not readout(single).multi_objective
    assert readout(double).multi_objective and readout(parse_spec(tiny_spec_dict())).front == ()


def test_a_trials_attributes_carry_its_references_and_extras_under_their_columns():
    row = TrialRow(study_name="s", trial_number=3, role="search", state="COMPLETE", coefficients_json="{}", n=64,
                   seed_start=0, sampler_json="{}", nfe=5, model_id="m", extractor="e", versions_json="{}", fid=12.5,
                   references={("source", "fid"): 20.25}, extras={"weights_path": "/w/t.pt", "weights_hash": None})
    attrs = trial_attrs(row)
    assert attrs["source_fid"] == 20.25 and attrs["weights_path"] == "/w/t.pt" and "weights_hash" not in attrs
    bare = trial_attrs(replace(row, references={}, extras={}))
    assert set(attrs) - set(bare) == {"source_fid", "weights_path"}


def test_the_tables_show_a_further_reference_where_the_method_has_one(old):
    store = Store(old["url"], create=False)
    spec = stored_spec(store, DT)
    trials, conf = skipsearch.trials(old["url"], DT), skipsearch.confirmations(old["url"], DT)

    def printed(shown: Readout | None) -> str:
        out = io.StringIO()
        terminal_tables.print_summary("head", trials, conf, Console(file=out, width=400, markup=False),
                                      readout=shown)
        return out.getvalue()

    with_source, without = printed(readout(spec)), printed(None)
    assert "source FID" in with_source and "held-out source FID (mean ± sd)" in with_source
    assert "source FID" not in without and "Source-domain" not in without
    front = pareto_front(trials, readout(spec).front)
    table = io.StringIO()
    Console(file=table, width=400).print(terminal_tables.pareto_table(front, readout(spec)))
    assert "Pareto front (target FID vs source FID, both lower is better)" in table.getvalue()
    assert terminal_tables.pruning_savings(trials.assign(state=["COMPLETE", "PRUNED", "COMPLETE"]), "steps") \
        .count("its last fine-tuning step") == 1


def test_the_coefficient_file_and_best_take_the_methods_fields_from_its_hooks(old, tmp_path):
    path = coeffile.read(skipsearch.export(old["url"], DT, tmp_path / "dt.yaml"))
    p, trial = path.provenance, path.provenance.trial
    assert p.source.fid == _numbers(old, DT, "trial", "source", "fid").loc[trial]
    held = _numbers(old, DT, "confirmation", "source", "fid").loc[trial]
    assert [s.source_fid for s in p.confirmation.seed_sets] == held.tolist()
    assert [s.train_seed for s in p.confirmation.seed_sets] == [1, 2]  # fine-tuned again, seed per seed set
    assert p.weights.path.endswith(f"trial-{trial:04d}.pt") and p.source.reference == "digits-0to4"
    skip = coeffile.read(skipsearch.export(old["url"], SKIP, tmp_path / "skip.yaml")).provenance
    assert skip.source is None and skip.weights is None
    assert {s.train_seed for s in skip.confirmation.seed_sets} == {None}

    lines = subprocess.run([sys.executable, "-m", "skipsearch", "best", DT, "--storage", old["url"]],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL).stdout.splitlines()
    said = [next(i for i, line in enumerate(lines) if line.lstrip().startswith(start))
            for start in ("source FID (forgetting, vs digits-0to4):", "verdict:", "fine-tuned weights:")]
    assert said == sorted(said)  # evidence above the verdict, the file below it, as before


SHARED_READERS = ("frames.py", "terminal_tables.py", "cli.py", "search/heldout.py", "search/verdict.py",
                  "search/readout.py", "search/annotations.py", "search/driver.py", "exchange/export.py",
                  "../dashboards/figures.py")


def test_no_shared_reader_names_a_methods_columns():
    """The columns a method declares are its own: a shared reader that names one (in code or in a docstring)
    has started to know which method it reads. ``api.py`` keeps ``ParetoPoint.source_fid``, a public field."""
    names = {c for method in METHODS.values() for frame in method.columns.values() for c in frame}
    assert {"source_fid", "weights_path", "train_seed", "delta_source_fid"} <= names
    for module in SHARED_READERS:
        source = (ROOT / "skipsearch" / module).resolve().read_text()
        source = source.replace("info.weights_hash", "")  # the model's facts: its pre-trained weights' hash
        named = {name for name in names if name in source}
        assert not named, f"{module} names {sorted(named)}"
