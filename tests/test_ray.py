"""Trials on a real local Ray cluster: placement, PRUNED/COMPLETE states, parity with in-process, kill -9."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import tiny_spec_dict
from threadpoolctl import threadpool_limits

import skipsearch
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store
from skipsearch.search.driver import open_study
from skipsearch.search.ray_tune import Placement, search_on_ray

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from kill_resume import kill_and_resume  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_address")


def _max_overlap(results: list) -> int:
    return max(sum(r.started <= s.started < r.ended for r in results) for s in results)


def test_fractional_gpus_put_four_trials_in_flight_each_with_its_device(tmp_path):
    spec = parse_spec(tiny_spec_dict("placement", metric={"n": 384, "batch_size": 128}, sampler={"steps": 4},
                                     search={"trials": 4}, confirm={"top_k": 0}))
    ctx = open_study(spec, f"sqlite:///{tmp_path / 'p.db'}")
    results = search_on_ray(ctx, 4, Placement(workers=4, cpus_per_trial=0.5, gpus_per_trial=0.5))
    assert len(results) == 4 and all(r.finished.state == "COMPLETE" for r in results)
    assert _max_overlap(results) == 4
    devices = sorted(r.cuda_visible_devices for r in results)
    assert devices == ["0", "0", "1", "1"]  # two trials share each fake GPU, each sees only its own


def test_asha_stops_are_pruned_and_only_top_rung_trials_complete(tmp_path):
    url = f"sqlite:///{tmp_path / 'asha.db'}"
    spec = parse_spec(tiny_spec_dict("asha", metric={"n": 256, "rungs": [64], "batch_size": 256},
                                     search={"trials": 10, "sampler": "random", "seed": 5}, confirm={"top_k": 1}))
    result = skipsearch.run(spec, storage=url, placement=Placement(workers=2, cpus_per_trial=1.0))
    study = optuna.load_study(study_name="asha", storage=url)
    states = [t.state for t in study.trials]
    assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1 and states[0] == optuna.trial.TrialState.COMPLETE
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert steps == [64, 256] and t.value == t.intermediate_values[256]
        else:
            assert steps == [64]
    ours = result.trials.set_index("trial_number")
    assert all(ours.loc[t.number].state == t.state.name for t in study.trials)
    assert (ours[ours.state == "PRUNED"].n == 64).all() and ours[ours.state == "PRUNED"].delta_fid.isna().all()
    assert result.winner is not None


def test_same_spec_and_seeds_give_the_same_fids_under_ray_and_in_process(tmp_path):
    spec = parse_spec(tiny_spec_dict("parity", metric={"rungs": [32]}, search={"trials": 4},
                                     confirm={"top_k": 0}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread for torch and BLAS, as a Ray worker with 1 CPU (OMP_NUM_THREADS=1)
    try:  # has: the thread count changes the order of float sums, hence their last bits
        with threadpool_limits(limits=1):
            local = _run(spec, tmp_path / "local.db", None)
    finally:
        torch.set_num_threads(threads)
    remote = _run(spec, tmp_path / "ray.db", Placement(workers=2, cpus_per_trial=1.0))
    trials_local = local.trials_frame("parity").set_index("trial_number")
    trials_remote = remote.trials_frame("parity").set_index("trial_number")
    assert (trials_local.coefficients_json == trials_remote.coefficients_json).all()
    # every rung evaluated on both paths (pruning may differ with arrival order) has the same FID, bit for bit
    both = local.rungs_frame("parity").merge(remote.rungs_frame("parity"), on=["trial_number", "n"])
    assert len(both) >= 5 and set(both.n) == {32, 64}
    assert (both.fid_x == both.fid_y).all() and (both.kid_x == both.kid_y).all()


def _run(spec, db: Path, placement) -> Store:
    skipsearch.run(spec, storage=f"sqlite:///{db}", placement=placement)
    return Store(f"sqlite:///{db}")


def test_kill_minus_9_then_resume_loses_no_completed_trial(tmp_path, ray_address):
    spec_path = tmp_path / "kr.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict("kr", metric={"n": 128, "rungs": [32], "batch_size": 128},
                                                       search={"trials": 8, "sampler": "tpe"},
                                                       confirm={"top_k": 1, "n": 64, "seed_sets": 1})))
    rounds, summary = kill_and_resume(spec_path, "kr", kills=2, workers=2, address=ray_address, seed=7,
                                      db=tmp_path / "kr.db")
    assert summary["returncode"] == 0 and summary["running"] == 0
    assert summary["evaluated"] == 8  # the budget counts evaluated trials, not ones killed in flight
    for r in rounds:  # every trial completed at any kill is still there, with the same value
        assert all(summary["values"].get(n) == v for n, v in r["values"].items())


def test_diff_tuning_trials_run_on_ray_workers(tmp_path):
    """Fine-tuning trials on 2 workers: weights written where the driver said, every state consistent."""
    from conftest import tiny_dt_spec_dict

    url = f"sqlite:///{tmp_path / 'dt.db'}"
    spec = parse_spec(tiny_dt_spec_dict("dtray", weights_dir=str(tmp_path / "w"), search={"trials": 8},
                                        confirm={"top_k": 1}))
    result = skipsearch.run(spec, storage=url, placement=Placement(workers=2, cpus_per_trial=1.0))
    study = optuna.load_study(study_name="dtray", storage=url)
    ours = result.trials.set_index("trial_number")
    assert len(study.trials) == 8 and study.trials[0].state == optuna.trial.TrialState.COMPLETE
    steps = Store(url).steps_frame("dtray")
    for t in study.trials:
        assert ours.loc[t.number].state == t.state.name
        mine = steps[steps.trial_number == t.number]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [3, 6] and list(mine.step) == [3, 6]
            assert Path(ours.loc[t.number].weights_path).is_file() and ours.loc[t.number].source_fid > 0
        else:
            assert t.state == optuna.trial.TrialState.PRUNED and sorted(t.intermediate_values) == [3]
    assert result.winner is not None and set(result.confirmation.role) == {"baseline", "search"}
