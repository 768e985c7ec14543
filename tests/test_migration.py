"""A database written by the previous skipsearch (main at 7079771, before the method and model-family
registries) still opens, resumes and exports, and today's code reproduces the FIDs it recorded.

``tests/data/main-7079771.db`` was made by that commit's code: the tiny Skip-Tuning study ``old-skip`` (4
trials, rungs [64] below n = 128, held-out confirmation) and the tiny Diff-Tuning study ``old-dt`` (3 trials).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import tiny_dt_spec_dict, tiny_spec_dict

import skipsearch
from skipsearch.spec import parse_spec
from skipsearch.storage import Store

OLD = Path(__file__).parent / "data" / "main-7079771.db"
OLD_SKIP_FIDS = {0: 17.747196, 1: 22.282037, 2: 22.088870, 3: 17.919428}  # as the old code printed them


@pytest.fixture
def old_db(tmp_path) -> str:
    path = tmp_path / "old.db"
    shutil.copy(OLD, path)
    return f"sqlite:///{path}"


def test_old_database_reads_without_a_write(old_db):
    frame = skipsearch.trials(old_db, "old-skip")
    assert dict(zip(frame.trial_number, frame.fid.round(6))) == OLD_SKIP_FIDS
    won = skipsearch.best(old_db, "old-skip")
    assert won.provenance.trial == 3 and won.provenance.confirmation is not None
    assert [s.level for s in won.provenance.skips] == [0, 1, 2]
    dt = skipsearch.best(old_db, "old-dt")
    assert dt.provenance.weights is not None and dt.provenance.source.reference == "digits-0to4"


def test_old_skip_study_resumes_and_today_reproduces_its_fids(old_db, tmp_path):
    spec = parse_spec(tiny_spec_dict("old-skip", metric={"n": 128, "rungs": [64], "batch_size": 64},
                                     search={"trials": 4}))
    result = skipsearch.run(spec, storage=old_db, trials=6)
    frame = result.trials.set_index("trial_number")
    assert len(frame) == 6 and set(frame.state) <= {"COMPLETE", "PRUNED"}
    assert {n: round(frame.loc[n].fid, 6) for n in OLD_SKIP_FIDS} == OLD_SKIP_FIDS  # kept, not redone
    coefficients = [frame.loc[n].coefficients_json for n in frame.index]
    assert len(set(coefficients)) == len(coefficients)  # the extension proposed new points
    for trial in (0, 3):  # exported from rows the old code wrote, re-sampled by today's
        path = skipsearch.export(old_db, "old-skip", tmp_path / f"t{trial}.yaml", trial=trial)
        check = skipsearch.verify(path)
        assert check.ok and check.recorded_fid == pytest.approx(OLD_SKIP_FIDS[trial], abs=1e-6), check


def test_old_diff_tuning_study_resumes(old_db, tmp_path):
    spec = parse_spec(tiny_dt_spec_dict("old-dt", weights_dir=str(tmp_path / "weights"), search={"trials": 3}))
    before = skipsearch.trials(old_db, "old-dt").set_index("trial_number")
    result = skipsearch.run(spec, storage=old_db, trials=4)
    after = result.trials.set_index("trial_number")
    assert len(after) == 4 and after.loc[3].state in ("COMPLETE", "PRUNED")
    assert (after.loc[[0, 1, 2], "fid"] == before.fid).all()
    assert Store(old_db, create=False).study_spec("old-dt")["finetune"]["steps"] == 6
